"""Forming the swarm on a lab's nodes: engine, firewall, images, init/join, labels.

One SSH connection per node serves the whole command. Join tokens are read with
`docker swarm join-token -q` and never printed or logged. Everything is idempotent: a node
that is already where it should be is left alone, so a rerun completes a half-formed swarm.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from pathlib import Path
from typing import Callable

from fabric import Connection

from . import labhost, swarm, template
from .config import Config
from .errors import SwarmlabError
from .lab import Lab, Node, NodeProgress, each_node, find_lab, lab_lock, ssh_target
from .hypervisor import Hypervisor
from .remote import RemoteError, connect, run
from .swarm import FormReport, NodeLabel

BUNDLE_DIR = "/var/cache/swarmlab-bundle"


class FormError(SwarmlabError):
    pass


def open_connections(config: Config, lab: Lab) -> dict[str, Connection]:
    conns: dict[str, Connection] = {}

    def open_one(node: Node) -> None:
        conns[node.name] = connect(ssh_target(config, lab.name, node))

    try:
        each_node(open_one, lab.nodes)
    except SwarmlabError:
        for c in conns.values():
            c.close()
        raise
    return conns


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
        proc = labhost.run_in_host_netns(
            ["apt-get", "-q", "-y", "--download-only", "--no-install-recommends",
             "-o", f"Dir::State::status={status}", "-o", f"Dir::Cache={tmp}/cache",
             "-o", f"Dir::Cache::archives={directory}", "-o", "Debug::NoLocking=1",
             "install", config.engine_package], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-2:])
        raise FormError(f"collecting the {config.engine_package} bundle with the host's apt failed: {tail} "
                        "(run `apt-get update` on the host)")
    (directory / "complete").write_text("")
    return sorted(directory.glob("*.deb"))


def ensure_engine(config: Config, node: Node, conn: Connection) -> list[str]:
    changes = []
    if run(conn, "command -v dockerd || true").strip() == "":
        if config.engine_install == "apt":
            run(conn, "DEBIAN_FRONTEND=noninteractive apt-get -q update && DEBIAN_FRONTEND=noninteractive "
                      f"apt-get -q -y install --no-install-recommends {config.engine_package}", timeout=900)
            changes.append(f"{node.name}: installed {config.engine_package} with apt")
        else:
            debs = _download_bundle(config, run(conn, "cat /var/lib/dpkg/status"))
            run(conn, f"mkdir -p {BUNDLE_DIR}")
            sftp = conn.sftp()
            for deb in debs:
                sftp.put(str(deb), f"{BUNDLE_DIR}/{deb.name}")
            run(conn, f"DEBIAN_FRONTEND=noninteractive dpkg -i {BUNDLE_DIR}/*.deb && rm -rf {BUNDLE_DIR}",
                timeout=900)
            changes.append(f"{node.name}: installed {config.engine_package} from a bundle of {len(debs)} packages")
    if run(conn, "systemctl is-enabled docker || true").strip() != "enabled":
        run(conn, "systemctl enable docker")
        changes.append(f"{node.name}: enabled docker at boot")
    if run(conn, "systemctl is-active docker || true").strip() != "active":
        run(conn, "systemctl start docker", check=False, timeout=180)
        if run(conn, "systemctl is-active docker || true").strip() != "active":
            journal = run(conn, "journalctl -u docker -n 5 --no-pager -o cat || true").strip().splitlines()
            raise FormError(f"{node.name}: the Docker engine does not start: " + " | ".join(journal[-3:]))
        changes.append(f"{node.name}: started docker")
    return changes


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


def open_swarm_ports(node: Node, conn: Connection) -> str:
    """Opens the swarm ports where a firewall is active. Returns what was found."""
    found = run(conn, f"sh -c {shlex.quote(FIREWALL_SCRIPT)}").strip()
    return f"{node.name}: " + ("no firewall, nothing needed" if found == "none" else f"opened swarm ports in {found}")


# --- images ---------------------------------------------------------------------------------
def side_load_images(config: Config, node: Node, conn: Connection) -> list[str]:
    archives = [template.image_archive(config.cache_dir), *config.engine_images]
    loaded = []
    present = set(run(conn, "docker image ls --format '{{.Repository}}:{{.Tag}}'").split())
    for archive in archives:
        if archive == archives[0] and template.BAKED_IMAGE in present:
            continue  # baked into the template already
        if not archive.is_file():
            raise FormError(f"image tarball {archive} (from [engine] images) not found")
        remote = f"/tmp/swarmlab-{archive.name}"
        conn.sftp().put(str(archive), remote)
        out = run(conn, f"docker load -i {shlex.quote(remote)} && rm -f {shlex.quote(remote)}", timeout=600)
        loaded += [f"{node.name}: {line.split(':', 1)[1].strip()}" for line in out.splitlines() if "Loaded image" in line]
    return loaded


# --- swarm ----------------------------------------------------------------------------------
def swarm_info(conn: Connection) -> swarm.SwarmInfo:
    return swarm.parse_swarm_info(run(conn, swarm.SWARM_INFO))


def node_ls(conn: Connection, timeout: float = 30) -> list[swarm.SwarmNode]:
    return swarm.parse_node_ls(run(conn, swarm.NODE_LS, timeout=timeout))


def _wait_member(entry: Connection, hostname: str, manager: bool, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for n in node_ls(entry):
            if n.hostname == hostname and n.status == "Ready" and (not manager or n.manager_status in ("Reachable", "Leader")):
                return
        time.sleep(1)
    raise FormError(f"{hostname} joined but is not {'Reachable' if manager else 'Ready'} after {timeout:.0f} s: "
                    f"see `swarmlab docker {hostname} -- info`")


def join(node: Node, conn: Connection, token: str, entry_ip: str) -> None:
    try:
        run(conn, f"docker swarm join --advertise-addr {node.ip} --token {token} {entry_ip}:2377",
            timeout=180, secret=token)
    except RemoteError as e:
        raise FormError(f"{node.name}: the swarm rejected the join: {str(e).split(': ', 2)[-1]}") from None


def form(config: Config, lab: Lab, conns: dict[str, Connection], managers: int,
         labels: list[NodeLabel], progress: NodeProgress = lambda *_: None) -> FormReport:
    report = FormReport()
    nodes = lab.nodes
    by_name = {n.name: n for n in nodes}
    check_plan(lab.name, [n.name for n in nodes], managers, labels)
    warning = swarm.manager_warning(managers)
    if warning:
        report.warnings.append(warning)

    def prepare(node: Node) -> None:
        conn = conns[node.name]
        progress(node.name, "engine", "")
        report.engine.extend(ensure_engine(config, node, conn))
        report.firewall.append(open_swarm_ports(node, conn))
        progress(node.name, "images", "")
        report.images.extend(side_load_images(config, node, conn))

    each_node(prepare, nodes)
    for lines in (report.engine, report.firewall, report.images):
        lines.sort()  # threads finish in any order; reports should not
    infos = dict(zip((n.name for n in nodes), each_node(lambda n: swarm_info(conns[n.name]), nodes)))
    wanted_managers = nodes[:managers]

    entry = next((n for n in nodes if infos[n.name].state == "active" and infos[n.name].is_manager), None)
    if entry is None:
        entry = wanted_managers[0]
        if infos[entry.name].state != "inactive":  # half-joined to a swarm that is gone
            run(conns[entry.name], "docker swarm leave --force", check=False)
        progress(entry.name, "init", entry.ip)
        run(conns[entry.name], f"docker swarm init --advertise-addr {entry.ip}", timeout=180)
        report.initialized = entry.name
    entry_conn = conns[entry.name]
    members: dict[str, swarm.SwarmNode] = {}
    for member in node_ls(entry_conn):  # a node that left and rejoined is listed twice: prefer Ready
        if member.hostname not in members or member.status == "Ready":
            members[member.hostname] = member

    def needs_join(node: Node) -> bool:
        if node.name in members and members[node.name].status != "Down" or node is entry:
            return False
        if infos[node.name].state != "inactive":  # thinks it is in a swarm the managers do not list
            run(conns[node.name], "docker swarm leave --force", check=False)
            if node.name in members:
                run(entry_conn, f"docker node rm --force {members[node.name].id}", check=False)
        return True

    manager_token = run(entry_conn, "docker swarm join-token -q manager").strip()
    for node in wanted_managers:  # one at a time: each must be Reachable before the next joins
        if needs_join(node):
            progress(node.name, "join", "manager")
            join(node, conns[node.name], manager_token, entry.ip)
            _wait_member(entry_conn, node.name, manager=True)
            report.joined.append(f"{node.name} (manager)")
        progress(node.name, "swarm", "manager")
    worker_token = run(entry_conn, "docker swarm join-token -q worker").strip()
    workers = [n for n in nodes[managers:] if needs_join(n)]

    def join_worker(node: Node) -> None:
        progress(node.name, "join", "worker")
        join(node, conns[node.name], worker_token, entry.ip)
        _wait_member(entry_conn, node.name, manager=False)
        report.joined.append(f"{node.name} (worker)")
        progress(node.name, "swarm", "worker")

    each_node(join_worker, workers)

    for label in labels:
        current = swarm.parse_labels_json(run(entry_conn, f"docker node inspect --format '{{{{json .Spec.Labels}}}}' "
                                                          f"{shlex.quote(by_name[label.node].name)}"))
        if current.get(label.key) != label.value:
            run(entry_conn, f"docker node update --label-add {shlex.quote(f'{label.key}={label.value}')} "
                            f"{shlex.quote(label.node)}")
            report.labels.append(f"{label.node}: {label.key}={label.value}")
    return report


def check_plan(lab: str, node_names: list[str], managers: int, labels: list[NodeLabel]) -> None:
    if not 1 <= managers <= len(node_names):
        raise FormError(f"--managers {managers} is out of range: use 1 to {len(node_names)} for {len(node_names)} nodes")
    for label in labels:
        if label.node not in node_names:
            raise FormError(f"label {label.node}:{label.key}={label.value} names node {label.node}, which lab {lab} "
                            f"does not have (nodes: {', '.join(node_names)})")


def form_lab(config: Config, lab_name: str, managers: int | None, labels: list[NodeLabel],
             progress: NodeProgress = lambda *_: None) -> FormReport:
    """`swarm form`: (re)forms the swarm of an existing lab."""
    hv = Hypervisor(config.uri)
    try:
        with lab_lock(config, lab_name):
            found = find_lab(config, hv, lab_name)
            if found is None:
                raise FormError(f"lab {lab_name} does not exist: `swarmlab up N --lab {lab_name}` makes it")
            stopped = [n.name for n in found.nodes if not (s := hv.domain_state(n.domain)) or not s.running]
            if stopped:
                raise FormError(f"nodes {', '.join(stopped)} of lab {lab_name} are not running: "
                                f"`swarmlab up {len(found.nodes)} --lab {lab_name}` starts them")
            conns = open_connections(config, found)
            try:
                count = managers or swarm.default_managers(len(found.nodes))
                return form(config, found, conns, count, labels, progress)
            finally:
                for c in conns.values():
                    c.close()
    finally:
        hv.close()


def swarm_view(config: Config, lab: Lab, running: list[Node]) -> tuple[dict[str, swarm.SwarmNode], str | None]:
    """`docker node ls` from the first manager that answers. Returns (by hostname, error)."""
    tried = []
    for node in running:
        tried.append(node.name)
        try:
            conn = connect(ssh_target(config, lab.name, node), timeout=5)
        except RemoteError:
            continue
        try:
            info = swarm_info(conn)
            if not info.is_manager:
                continue
            return {n.hostname: n for n in node_ls(conn, timeout=15)}, None
        except SwarmlabError:
            continue
        finally:
            conn.close()
    return {}, f"no manager answered (tried {', '.join(tried) or 'no running node'})"


def bring_up(config: Config, count: int, lab_name: str, prefix: str, managers: int | None,
             labels: list[NodeLabel], form_swarm: bool, progress: NodeProgress = lambda *_: None
             ) -> tuple[Lab, FormReport | None]:
    """`up`: the nodes, then (unless told not to) the swarm, over the same SSH connections."""
    from . import lab as labs
    count_managers = managers or swarm.default_managers(count)
    conns: dict[str, Connection] = {}
    try:
        found = labs.up(config, count, lab_name, prefix, progress,
                        validate=lambda names: check_plan(lab_name, names, count_managers, labels)
                        if form_swarm else None,
                        connections=conns)
        if not form_swarm:
            return found, None
        with lab_lock(config, lab_name):
            return found, form(config, found, conns, count_managers, labels, progress)
    finally:
        for c in conns.values():
            c.close()


def status_with_swarm(config: Config, lab_name: str) -> dict:
    """`status`: the lab's rows, plus each node's swarm columns read from one manager."""
    from . import lab as labs
    data = labs.status(config, lab_name)
    hv = Hypervisor(config.uri)
    try:
        found = find_lab(config, hv, lab_name)
    finally:
        hv.close()
    running = [found.node(r["node"]) for r in data["nodes"] if r["ssh"]]
    view, error = swarm_view(config, found, running)
    for row in data["nodes"]:
        member = view.get(row["node"])
        row.update({"role": member.role if member else None,
                    "manager_status": member.manager_status if member else None,
                    "availability": member.availability if member else None,
                    "node_status": member.status if member else None,
                    "engine": member.engine_version if member else None})
    if error:
        data["swarm_error"] = error
    return data
