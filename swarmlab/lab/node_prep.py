"""A node made ready for the swarm in one SSH round trip: the engine (installed from a .deb
bundle the host's apt resolves when the template lacks it), the firewall ports swarm needs,
the registry mirror, and the stand-in images side-loaded where the template lacks them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fabric import Connection

from swarmlab.adapters.netns import run_in_host_netns
from swarmlab.adapters.engine_api import KeptEngineAPI
from swarmlab.adapters.remote import run
from swarmlab.config import Config
from swarmlab.core import swarm
from swarmlab.core.command import Command, Raw, sh, then
from swarmlab.core.swarm import FormReport
from swarmlab.errors import SwarmlabError
from swarmlab.host import images
from swarmlab.lab.model import Node, NodeProgress

BUNDLE_DIR = "/var/cache/swarmlab-bundle"


class PrepareError(SwarmlabError):
    pass


# --- engine ---------------------------------------------------------------------------------
def _download_bundle(config: Config, guest_status: str) -> list[Path]:
    """The .deb files the guest lacks for the engine, resolved by the host's apt against the
    guest's own dpkg status, and cached by that status."""
    import hashlib
    key = hashlib.sha256((config.engine_package + guest_status).encode()).hexdigest()[:16]
    directory = config.cache_dir / "bundles" / key
    if (directory / "complete").exists():
        return sorted(directory.glob("*.deb"))
    (directory / "partial").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        status = Path(tmp) / "status"
        status.write_text(guest_status)
        (Path(tmp) / "cache").mkdir()
        proc = run_in_host_netns(
            ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
             "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache={tmp}/cache",
             "-o", f"Dir::Cache::archives={directory}", "-o", "Debug::NoLocking=1",
             "install", config.engine_package], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise PrepareError(f"collecting the {config.engine_package} bundle with the host's apt failed: {tail} "
                        "(run `apt-get update` on the host)")
    (directory / "complete").write_text("")
    return sorted(directory.glob("*.deb"))


def debian_release(os_release: str) -> str:
    for line in os_release.splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return "unknown"


def bundle_refusal(node: str, host_release: str, node_release: str) -> str | None:
    """The bundle is resolved by the host's apt, so it fits a node of the host's release only."""
    if host_release == node_release:
        return None
    return (f"{node} runs Debian {node_release} but the engine bundle comes from this host's apt "
            f"({host_release}): set [engine] install = \"apt\" in swarmlab.toml, or use a template of "
            f"{host_release} (`template build --suite {host_release} --no-engine`)")


def install_engine(config: Config, node: Node, conn: Connection) -> list[str]:
    """Installs the engine on a node that has none (a user's own template)."""
    if config.engine_install == "apt":
        env = Raw("DEBIAN_FRONTEND=noninteractive")
        run(conn, then(Command(env, "apt-get", "-q", "update"),
                       Command(env, "apt-get", "-q", "-y", "install", "--no-install-recommends",
                               config.engine_package,
                               # Debian 13's CLI is its own package, which docker.io only recommends
                               Raw("$(apt-cache show docker-cli >/dev/null 2>&1 && echo docker-cli)"))),
            timeout=900)
        return [f"{node.name}: installed {config.engine_package} with apt"]
    refusal = bundle_refusal(node.name, debian_release(Path("/etc/os-release").read_text()),
                             debian_release(run(conn, Command("cat", "/etc/os-release"))))
    if refusal:
        raise PrepareError(refusal)
    debs = _download_bundle(config, run(conn, Command("cat", "/var/lib/dpkg/status")))
    run(conn, Command("mkdir", "-p", BUNDLE_DIR))
    sftp = conn.sftp()
    for deb in debs:
        sftp.put(str(deb), f"{BUNDLE_DIR}/{deb.name}")
    run(conn, then(Command(Raw("DEBIAN_FRONTEND=noninteractive"), "dpkg", "-i",
                           *[f"{BUNDLE_DIR}/{deb.name}" for deb in debs]),
                   Command("rm", "-rf", BUNDLE_DIR)), timeout=900)
    return [f"{node.name}: installed {config.engine_package} from a bundle of {len(debs)} packages"]


# --- firewall -------------------------------------------------------------------------------
FIREWALL_SCRIPT = r"""
tcp="2377 7946"; udp="7946 4789"
if command -v ufw >/dev/null && ufw status | grep -q 'Status: active'; then
  for p in $tcp; do ufw allow $p/tcp >/dev/null; done; for p in $udp; do ufw allow $p/udp >/dev/null; done
  echo ufw
elif command -v firewall-cmd >/dev/null && firewall-cmd --state >/dev/null 2>&1; then
  for p in $tcp; do firewall-cmd -q --permanent --add-port=$p/tcp; done
  for p in $udp; do firewall-cmd -q --permanent --add-port=$p/udp; done
  firewall-cmd -q --reload; echo firewalld
elif command -v nft >/dev/null && nft list chains 2>/dev/null | grep -q 'hook input.*policy drop'; then
  nft list chains | awk '/^table/{fam=$2; tbl=$3} /^\tchain/{ch=$2} /hook input.*policy drop/{print fam, tbl, ch}' |
  while read fam tbl ch; do
    nft list chain $fam $tbl $ch | grep -q 'dport 2377' ||
      nft insert rule $fam $tbl $ch tcp dport '{ 2377, 7946 }' accept \; insert rule $fam $tbl $ch udp dport '{ 7946, 4789 }' accept
  done; echo nftables
else
  echo none
fi
"""


# The registry mirror in /etc/docker/daemon.json, written only where the file is absent or is
# one swarmlab wrote (a user's own daemon.json is left alone). SIGHUP (`systemctl reload`)
# applies registry settings without restarting the engine, so the swarm is not disturbed.
MIRROR_SCRIPT = r"""
f=/etc/docker/daemon.json; want='{"registry-mirrors": ["http://%(addr)s"], "insecure-registries": ["%(addr)s"]}'
if [ -e $f ] && [ "$(cat $f)" = "$want" ]; then echo same
elif [ -e $f ] && ! grep -qx '{"registry-mirrors": \["http://[0-9.:]*"\], "insecure-registries": \["[0-9.:]*"\]}' $f; then echo foreign
else mkdir -p /etc/docker && printf '%%s\n' "$want" > $f.new && mv $f.new $f && systemctl reload docker && echo set
fi
"""

# Everything a node needs before it joins, in one SSH round trip (each exec costs ~0.5 s of
# emulated CPU under TCG): engine enabled and running (waiting for the template's image unit),
# swarm ports open, registry mirror. Output: key=value lines. The images present and the swarm
# state are read next through the node's Engine API session, which formation goes on using.
PREPARE_SCRIPT = r"""
say() { printf '%%s=%%s\n' "$1" "$2"; }
firewall() {%(firewall)s}
mirror() {%(mirror)s}
command -v dockerd >/dev/null || { say engine missing; exit 0; }
systemctl is-enabled -q docker 2>/dev/null || { systemctl enable -q docker 2>/dev/null && say change 'enabled docker at boot'; }
state=$(systemctl is-active docker)
if [ "$state" != active ]; then  # "activating" at boot: wait for it, it is no change of ours
  if systemctl start docker; then [ "$state" = activating ] || say change 'started docker'
  else say engine failed; journalctl -u docker -n 5 --no-pager -o cat | tail -n 3 | sed 's/^/journal=/'; exit 0; fi
fi
say engine running
systemctl start swarmlab-images 2>/dev/null
say firewall "$(firewall)"
[ -z "%(addr)s" ] || say mirror "$(mirror)"
"""


def prepare_script(mirror: str | None) -> str:
    return PREPARE_SCRIPT % {"firewall": FIREWALL_SCRIPT, "addr": mirror or "",
                             "mirror": MIRROR_SCRIPT % {"addr": mirror} if mirror else "\n:\n"}


def parse_prepared(text: str) -> dict[str, list[str]]:
    """PREPARE_SCRIPT's output by key, each key's values in order."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def prepare_node(config: Config, node: Node, conn: Connection, api: KeptEngineAPI, report: FormReport,
                 mirror: str | None, progress: NodeProgress) -> swarm.SwarmInfo:
    """Engine, firewall, images and registry mirror on one node; returns its swarm state, read
    through `api`, the node's Engine API session."""
    script = sh(prepare_script(mirror))
    found = parse_prepared(run(conn, script, timeout=300))
    if found.get("engine") == ["missing"]:
        report.engine.extend(install_engine(config, node, conn))
        found = parse_prepared(run(conn, script, timeout=300))
    if found.get("engine") != ["running"]:
        raise PrepareError(f"{node.name}: the Docker engine does not start: " + " | ".join(found.get("journal", [])))
    report.engine.extend(f"{node.name}: {change}" for change in found.get("change", []))
    firewall = found.get("firewall", ["none"])[0]
    report.firewall.append(f"{node.name}: " + ("no firewall, nothing needed" if firewall == "none"
                                               else f"opened swarm ports in {firewall}"))
    mirror_state = found.get("mirror", [""])[0]
    if mirror_state == "set":
        report.engine.append(f"{node.name}: registry mirror http://{mirror}")
    elif mirror_state == "foreign":
        report.engine.append(f"{node.name}: kept its own /etc/docker/daemon.json (no registry mirror)")
    side_load_images(config, node, conn, swarm.image_tags(api.get("/images/json", timeout=60)), report, progress)
    return read_swarm_state(api)


def side_load_images(config: Config, node: Node, conn: Connection, present: set[str], report: FormReport,
                     progress: NodeProgress) -> None:
    """The stand-ins, when the template did not bake them (an engine installed later, or the
    user's own template), and any `[engine] images` archives."""
    archives = [images.archive(config.cache_dir), *config.engine_images]
    for archive in archives:
        if archive == archives[0] and present >= set(images.STANDIN_NAMES):
            continue  # baked into the template already
        if not archive.is_file():
            raise PrepareError(f"image tarball {archive} (from [engine] images) not found")
        progress(node.name, "images", archive.name)
        remote = f"/tmp/swarmlab-{archive.name}"
        conn.sftp().put(str(archive), remote)
        out = run(conn, then(Command("docker", "load", "-i", remote), Command("rm", "-f", remote)), timeout=600)
        report.images.extend(f"{node.name}: {line.split(':', 1)[1].strip()}"
                             for line in out.splitlines() if "Loaded image" in line)


def read_swarm_state(api: KeptEngineAPI) -> swarm.SwarmInfo:
    """The node's swarm state, as `docker info` shows it, through its API session."""
    return swarm.swarm_info(api.get("/info", timeout=60).get("Swarm") or {})
