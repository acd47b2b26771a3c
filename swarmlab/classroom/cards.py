"""What each student of a class is handed: their lab, its nodes, their portal page and the
folder with their key, ssh_config and known_hosts, all pointing at the running portal."""

from __future__ import annotations

from pathlib import Path

from swarmlab.adapters.keys import write_private
from swarmlab.classroom import access, portal_endpoint, room as classroom
from swarmlab.config import Config
from swarmlab.lab import model as labs


def cards(config: Config) -> list[dict]:
    """What each student is handed: their lab, its nodes, and how to reach them through the
    running portal and its gateway (`swarmlab portal` records where it listens)."""
    room = classroom.require(config)
    at = portal_endpoint.current(config)
    out = []
    for student in room.students:
        found = labs.load_journal(classroom.student_config(config, student), student.lab)
        nodes = found.nodes if found else []
        first = nodes[0].name if nodes else f"{config.prefix}1"
        token = access.token(config, student.lab)
        out.append({"student": student.name, "lab": student.lab, "host": student.host,
                    "nodes": [{"node": n.name, "ip": n.ip, "dns": n.fqdn.rstrip(".")} for n in nodes],
                    "gateway": f"{student.lab}@{at.address}:{at.ssh_port}",
                    "folder": f"swarmlab-{student.lab}",
                    "ssh": f"cd swarmlab-{student.lab} && ssh -F ssh_config {first}",
                    "user": access.STUDENT_USER,
                    "portal": f"{at.url}/s/{token}" if token else None,
                    "fingerprint": at.fingerprint, "portal_running": at.running})
    return out


def write_card_folders(config: Config, directory: Path) -> list[Path]:
    """Per student, the folder swarmlab-<lab> they are handed: their private key (0600),
    ssh_config and known_hosts (the gateway's and the nodes' host keys)."""
    at = portal_endpoint.current(config)
    written = []
    for card in cards(config):
        lab = card["lab"]
        key = access.credentials_dir(config, lab) / "id_ed25519"
        if not key.exists():
            raise classroom.ClassError(f"lab {lab} has no credentials yet: rerun `swarmlab class up` (it keeps everything made)")
        found = labs.load_journal(classroom.student_config(config, classroom.require(config).student(lab)), lab)
        folder = directory / f"swarmlab-{lab}"
        write_private(folder / "id_ed25519", key.read_text())
        write_private(folder / "ssh_config", access.ssh_config_text(found, at.address, at.ssh_port))
        write_private(folder / "known_hosts", access.known_hosts_text(config, lab, at.address, at.ssh_port))
        write_private(folder / "portal.txt", f"your page: {card['portal']}\n"
                      f"its certificate, as your browser should show it: SHA-256 {at.fingerprint or '(none yet)'}\n"
                      f"SSH: {card['ssh']} (through {card['gateway']})\n")
        written.append(folder)
    return written
