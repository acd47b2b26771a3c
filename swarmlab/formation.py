"""Forming the swarm on a lab's nodes: engine, firewall, images, init/join, labels.

One SSH connection per node serves the whole command. Join tokens are read with
`docker swarm join-token -q` and never printed or logged. Everything is idempotent: a node
that is already where it should be is left alone, so a rerun completes a half-formed swarm.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fabric import Connection

from . import images, swarm
from .labhost import registry_address
from .config import Config
from .errors import SwarmlabError
from .lab import Lab, Node, NodeProgress, each_node, lab_lock, require_lab, ssh_target
from .hypervisor import Hypervisor
from .netns import run_in_host_netns
from .command import Command, Raw, or_true, sh, then
from .remote import RemoteError, connect, read, run
from .waiting import poll_until
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
        proc = run_in_host_netns(
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


def _active(conn: Connection, unit: str, what: str = "is-active") -> str:
    return run(conn, or_true(Command("systemctl", what, unit))).strip()


def ensure_engine(config: Config, node: Node, conn: Connection) -> list[str]:
    changes = []
    if run(conn, or_true(Command("command", "-v", "dockerd"))).strip() == "":
        if config.engine_install == "apt":
            env = Raw("DEBIAN_FRONTEND=noninteractive")
            run(conn, then(Command(env, "apt-get", "-q", "update"),
                           Command(env, "apt-get", "-q", "-y", "install", "--no-install-recommends",
                                   config.engine_package)), timeout=900)
            changes.append(f"{node.name}: installed {config.engine_package} with apt")
        else:
            debs = _download_bundle(config, run(conn, Command("cat", "/var/lib/dpkg/status")))
            run(conn, Command("mkdir", "-p", BUNDLE_DIR))
            sftp = conn.sftp()
            for deb in debs:
                sftp.put(str(deb), f"{BUNDLE_DIR}/{deb.name}")
            run(conn, then(Command(Raw("DEBIAN_FRONTEND=noninteractive"), "dpkg", "-i",
                                   *[f"{BUNDLE_DIR}/{deb.name}" for deb in debs]),
                           Command("rm", "-rf", BUNDLE_DIR)), timeout=900)
            changes.append(f"{node.name}: installed {config.engine_package} from a bundle of {len(debs)} packages")
    if _active(conn, "docker", "is-enabled") != "enabled":
        run(conn, Command("systemctl", "enable", "docker"))
        changes.append(f"{node.name}: enabled docker at boot")
    if _active(conn, "docker") != "active":
        run(conn, Command("systemctl", "start", "docker"), check=False, timeout=180)
        if _active(conn, "docker") != "active":
            journal = run(conn, or_true(Command("journalctl", "-u", "docker", "-n", "5", "--no-pager", "-o", "cat")))
            raise FormError(f"{node.name}: the Docker engine does not start: "
                            + " | ".join(journal.strip().splitlines()[-3:]))
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
    found = run(conn, sh(FIREWALL_SCRIPT)).strip()
    return f"{node.name}: " + ("no firewall, nothing needed" if found == "none" else f"opened swarm ports in {found}")


# --- images ---------------------------------------------------------------------------------
def side_load_images(config: Config, node: Node, conn: Connection) -> list[str]:
    """The stand-ins, when the template did not bake them (an engine installed later, or the
    user's own template), and any `[engine] images` archives."""
    archives = [images.archive(config.cache_dir), *config.engine_images]
    loaded = []
    # The template loads them at boot: wait for that unit (a no-op once it ran, absent elsewhere)
    # instead of racing it with a second load.
    run(conn, or_true(Command("systemctl", "start", "swarmlab-images")), timeout=180)
    present = set(run(conn, Command("docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}")).split())
    for archive in archives:
        if archive == archives[0] and present >= set(images.STANDIN_NAMES):
            continue  # baked into the template already
        if not archive.is_file():
            raise FormError(f"image tarball {archive} (from [engine] images) not found")
        remote = f"/tmp/swarmlab-{archive.name}"
        conn.sftp().put(str(archive), remote)
        out = run(conn, then(Command("docker", "load", "-i", remote), Command("rm", "-f", remote)), timeout=600)
        loaded += [f"{node.name}: {line.split(':', 1)[1].strip()}" for line in out.splitlines() if "Loaded image" in line]
    return loaded


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


def set_registry_mirror(node: Node, conn: Connection, address: str) -> list[str]:
    found = run(conn, sh(MIRROR_SCRIPT % {"addr": address})).strip()
    if found == "set":
        return [f"{node.name}: registry mirror http://{address}"]
    if found == "foreign":
        return [f"{node.name}: kept its own /etc/docker/daemon.json (no registry mirror)"]
    return []


# --- swarm ----------------------------------------------------------------------------------
def _wait_member(entry: Connection, hostname: str, role: str, timeout: float = 120) -> None:
    """Until the managers list the node Ready, and Reachable as a manager or with no manager
    status as a worker."""
    def settled() -> bool:
        member = swarm.current_members(read(entry, swarm.NODES, timeout=30)).get(hostname)
        return bool(member and member.status == "Ready"
                    and (member.manager_status in ("Reachable", "Leader") if role == "manager"
                         else not member.manager_status))
    poll_until(settled, timeout, 1, lambda: FormError(
        f"{hostname} is not {'a Reachable manager' if role == 'manager' else 'a Ready worker'} after "
        f"{timeout:.0f} s: see `swarmlab docker {hostname} -- info`"))


def _carry_out(step: swarm.Step, conns: dict[str, Connection], entry: Connection) -> None:
    try:
        run(conns[step.on], step.command, timeout=180, check=step.kind not in ("leave", "remove"))
    except RemoteError as e:
        if step.kind.startswith("join"):
            raise FormError(f"{step.node}: the swarm rejected the join: {str(e).split(': ', 2)[-1]}") from None
        raise FormError(f"{step.node}: `{step.command.shown}` failed: {str(e).split(': ', 2)[-1]}") from None
    if step.wait:
        # A joining node cannot list the swarm yet; a promotion or demotion ran on a manager.
        _wait_member(conns[step.on] if step.kind in ("promote", "demote") else entry, step.node, step.wait)


def form(config: Config, lab: Lab, conns: dict[str, Connection], managers: int | None,
         labels: list[NodeLabel], progress: NodeProgress = lambda *_: None) -> FormReport:
    """Carries out the formation plan: engine, firewall and images on every node, then init,
    joins, promotions and demotions, then labels. Each step is computed from facts read just
    before (swarm.plan_*), so a rerun does only what is still missing."""
    report = FormReport()
    nodes = lab.nodes
    check_plan(lab.name, [n.name for n in nodes], managers, labels)
    mirror = registry_address(config)

    def prepare(node: Node) -> None:
        conn = conns[node.name]
        progress(node.name, "engine", "")
        report.engine.extend(ensure_engine(config, node, conn))
        report.firewall.append(open_swarm_ports(node, conn))
        progress(node.name, "images", "")
        report.images.extend(side_load_images(config, node, conn))
        if mirror:
            report.engine.extend(set_registry_mirror(node, conn, mirror))

    each_node(prepare, nodes)
    for lines in (report.engine, report.firewall, report.images):
        lines.sort()  # threads finish in any order; reports should not
    order = [n.name for n in nodes]
    ips = {n.name: n.ip for n in nodes}
    infos = dict(zip(order, each_node(lambda n: read(conns[n.name], swarm.SWARM), nodes)))

    entry, bootstrap = swarm.plan_bootstrap(order, ips, infos)
    for step in bootstrap:
        if step.kind == "init":
            progress(step.node, "init", ips[step.node])
            report.initialized = step.node
        _carry_out(step, conns, conns[entry])
    tokens = {role: read(conns[entry], swarm.join_token(role)) for role in ("manager", "worker")}
    wanted, steps = swarm.plan_membership(order, ips, infos, read(conns[entry], swarm.NODES), managers, entry, tokens)

    def carry_out(step: swarm.Step) -> None:
        if step.kind.startswith("join"):
            progress(step.node, "join", step.wait)
        _carry_out(step, conns, conns[entry])
        if step.kind.startswith("join"):
            report.joined.append(f"{step.node} ({step.wait})")
        elif step.kind in ("promote", "demote"):
            getattr(report, f"{step.kind}d").append(step.node)

    workers = [s for s in steps if s.kind == "join-worker"]
    warning = swarm.manager_warning(len(wanted))
    if warning:
        report.warnings.append(warning)
    for step in steps:  # in order, one at a time, except that workers join together
        if step.kind != "join-worker":
            carry_out(step)
        elif step is workers[0]:
            each_node(carry_out, workers)
    manager = wanted[0]  # the entry itself may have been demoted
    for member in swarm.current_members(read(conns[manager], swarm.NODES)).values():
        if member.hostname in order:
            progress(member.hostname, "swarm", member.role)

    current = {name: read(conns[manager], swarm.node_labels(name)) for name in {label.node for label in labels}}
    for step in swarm.plan_labels(labels, current, manager):
        _carry_out(step, conns, conns[manager])
        report.labels.append(f"{step.node}: {step.detail}")
    return report


def check_plan(lab: str, node_names: list[str], managers: int | None, labels: list[NodeLabel]) -> None:
    if managers is not None and not 1 <= managers <= len(node_names):
        raise FormError(f"--managers {managers} is out of range: use 1 to {len(node_names)} for {len(node_names)} nodes")
    for label in labels:
        if label.node not in node_names:
            raise FormError(f"label {label.node}:{label.key}={label.value} names node {label.node}, which lab {lab} "
                            f"does not have (nodes: {', '.join(node_names)})")


def form_lab(config: Config, lab_name: str, managers: int | None, labels: list[NodeLabel],
             progress: NodeProgress = lambda *_: None) -> FormReport:
    """`swarm form`: (re)forms the swarm of an existing lab."""
    with Hypervisor(config.uri) as hv, lab_lock(config, lab_name):
        found = require_lab(config, hv, lab_name)
        stopped = [n.name for n in found.nodes if not (s := hv.domain_state(n.domain)) or not s.running]
        if stopped:
            raise FormError(f"nodes {', '.join(stopped)} of lab {lab_name} are not running: "
                            f"`swarmlab up {len(found.nodes)} --lab {lab_name}` starts them")
        conns = open_connections(config, found)
        try:
            return form(config, found, conns, managers, labels, progress)
        finally:
            for c in conns.values():
                c.close()


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
            if not read(conn, swarm.SWARM).is_manager:
                continue
            return swarm.current_members(read(conn, swarm.NODES, timeout=15)), None
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
    conns: dict[str, Connection] = {}
    try:
        found = labs.up(config, count, lab_name, prefix, progress,
                        validate=lambda names: check_plan(lab_name, names, managers, labels)
                        if form_swarm else None,
                        connections=conns)
        if not form_swarm:
            return found, None
        with lab_lock(config, lab_name):
            report = form(config, found, conns, managers, labels, progress)
            # what `up` was asked, so that a rebuild without a snapshot forms the same swarm
            if managers is not None:
                found.managers = managers
            found.labels = sorted({*found.labels, *(f"{lb.node}:{lb.key}={lb.value}" for lb in labels)})
            labs.save_journal(config, found)
            return found, report
    finally:
        for c in conns.values():
            c.close()


def status_with_swarm(config: Config, lab_name: str) -> dict:
    """`status`: the lab's rows, plus each node's swarm columns read from one manager."""
    from . import lab as labs
    data = labs.status(config, lab_name)
    with Hypervisor(config.uri) as hv:
        found = require_lab(config, hv, lab_name)
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
