"""Snapshots of a whole lab: every node is paused, snapshotted (memory and disk, internal to its
qcow2 overlay) and resumed together, guest clocks synced, and the swarm's baseline (nodes,
roles, leader, availability, labels, services, configs, secrets by name, networks) stored
beside it in the lab's journal: what `reset` returns to."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from fabric import Connection

from swarmlab.adapters.engine_api import EngineAPI
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import RemoteError, connect
from swarmlab.config import Config
from swarmlab.core import baseline as bl
from swarmlab import config_values
from swarmlab.core.settling import SETTLE_WITHIN
from swarmlab.errors import NotFound, Refused, SwarmlabError
from swarmlab.lab.model import Lab, each_node, lab_dir, ssh_target
from swarmlab.lab.partition import cut_links
from swarmlab.lab.session import ANSWER_WITHIN, open_lab
from swarmlab.lab.settle import wait_quiet

DEFAULT_SNAPSHOT = config_values.DEFAULT_SNAPSHOT
Progress = Callable[[str], None]


class SnapshotError(SwarmlabError):
    pass


@dataclass
class SnapshotRecord:
    name: str
    created: float  # wall clock, seconds since the epoch
    nodes: list[str]
    baseline: dict | None  # SwarmState.as_dict(); None for a lab without a swarm
    seconds: float = 0.0
    bytes: int = 0  # disk the snapshot added to the overlays

    @property
    def state(self) -> bl.SwarmState | None:
        return bl.SwarmState.from_dict(self.baseline) if self.baseline else None


def _snapshot_dir(config: Config, lab: str) -> Path:
    return lab_dir(config, lab) / "snapshots"


def load_snapshot(config: Config, lab: str, name: str) -> SnapshotRecord | None:
    try:
        return SnapshotRecord(**json.loads((_snapshot_dir(config, lab) / f"{name}.json").read_text()))
    except FileNotFoundError:
        return None


def list_snapshots(config: Config, lab: str) -> list[SnapshotRecord]:
    directory = _snapshot_dir(config, lab)
    if not directory.is_dir():
        return []
    return sorted((SnapshotRecord(**json.loads(p.read_text())) for p in directory.glob("*.json")),
                  key=lambda r: r.created)


def _save_record(config: Config, lab: str, record: SnapshotRecord) -> None:
    path = _snapshot_dir(config, lab) / f"{record.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2) + "\n")
    tmp.replace(path)


# --- reading the swarm -----------------------------------------------------------------------
def read_state(conns: dict[str, Connection]) -> bl.SwarmState | None:
    """The swarm's state from the first manager that answers (one Engine API session), or None."""
    for name in sorted(conns):
        try:
            with EngineAPI(conns[name], timeout=30) as api:
                return bl.swarm_state_from(api.get)
        except (SwarmlabError, OSError, KeyError, TypeError):  # a worker, or a manager without quorum
            continue
    return None


def read_state_logging_in(config: Config, lab: Lab) -> bl.SwarmState | None:
    """read_state() with one SSH login at a time, up to the first manager that answers (the
    first node, as a rule): right after `up`, the guests are still settling the new swarm, and
    each login took seconds of their emulated CPU."""
    for node in lab.nodes:
        try:
            conn = connect(ssh_target(config, lab.name, node), timeout=ANSWER_WITHIN)
        except RemoteError:
            continue
        try:
            state = read_state({node.name: conn})
        finally:
            conn.close()
        if state is not None:
            return state
    return None


# --- snapshots -------------------------------------------------------------------------------
def resume_paused(hv: Hypervisor, lab: Lab) -> list[str]:
    """A run killed between pause and resume left nodes paused: resume them."""
    return [n.name for n in lab.nodes if hv.resume(n.domain)]


def save_snapshot(config: Config, lab_name: str, name: str = DEFAULT_SNAPSHOT, force: bool = False,
                  progress: Progress = lambda _m: None, locked: bool = False,
                  baseline: bl.SwarmState | None = None) -> SnapshotRecord:
    """`baseline`: the swarm's state as its caller has just read it (formation, over a session
    it had open), instead of reading it here. Waits first until the nodes are quiet (at most
    SETTLE_WITHIN): a snapshot of busy guests replays their work on every revert."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise SnapshotError(f"snapshot name {name!r} is not a simple name: use letters, digits, '-' and '_'")
    with open_lab(config, lab_name, lock=not locked) as session:
        config, hv, lab = session.config, session.hv, session.lab
        resumed = resume_paused(hv, lab)
        if resumed:
            progress(f"resumed {', '.join(resumed)} (left paused by an interrupted run)")
        stopped = [n.name for n in lab.nodes if not ((s := hv.domain_state(n.domain)) and s.running)]
        if stopped and not force:
            raise Refused(f"{', '.join(stopped)} of lab {lab_name} not running: a snapshot now would not be "
                          f"consistent; `swarmlab chaos start --all --lab {lab_name}` first, or --force")
        cut = cut_links(hv, lab)
        if cut:  # a snapshot keeps the live NIC: a revert would bring the cut back, or fail on a split's network
            raise Refused(f"{', '.join(cut)} of lab {lab_name} cut off the lab network (`chaos partition` or "
                          f"`split`): `swarmlab chaos heal --all --lab {lab_name}` first")
        answering = Lab(lab.name, [n for n in lab.nodes if n.name not in stopped])  # a stopped node never answers
        state = baseline if baseline is not None else read_state_logging_in(config, answering)
        if state is not None and not force:
            down = [n.hostname for n in state.nodes.values() if n.status != "ready"]
            if down:
                raise Refused(f"{', '.join(down)} not Ready in the swarm of lab {lab_name}: a snapshot now "
                              "would keep a broken swarm as its baseline; wait, or --force")
        busy = wait_quiet(hv, answering, lambda node, _phase, detail: progress(f"{node}: settling, {detail}"))
        if busy:
            progress(f"{', '.join(busy)} still busy after {SETTLE_WITHIN:.0f} s: snapshotted as they are")
        before = {n.name: hv.volume_bytes(config.node_pool, n.volume) for n in lab.nodes}
        started = time.monotonic()
        for node in lab.nodes:
            if name in hv.snapshot_names(node.domain):
                hv.delete_snapshot(node.domain, name)  # saving again replaces it
        progress(f"pausing {len(lab.nodes)} nodes, snapshotting each, resuming all")
        running = [n for n in lab.nodes if hv.domain_state(n.domain).running]
        try:
            for node in running:
                hv.suspend(node.domain)
            for node in lab.nodes:
                hv.create_snapshot(node.domain, name, f"swarmlab lab {lab_name}")
        finally:
            for node in running:  # also on Ctrl-C: never leave a node paused
                hv.resume(node.domain)
        sync_clocks(hv, Lab(lab.name, running))  # a paused guest's clock stood still meanwhile
        seconds = round(time.monotonic() - started, 2)
        grown = sum(max(0, hv.volume_bytes(config.node_pool, n.volume) - before[n.name]) for n in lab.nodes)
        record = SnapshotRecord(name, time.time(), [n.name for n in lab.nodes],
                                state.as_dict() if state else None, seconds, grown)
        _save_record(config, lab_name, record)
        return record


def keep_formed(config: Config, lab_name: str, changed: bool, progress: Progress = lambda _m: None,
                baseline: bl.SwarmState | None = None) -> SnapshotRecord | None:
    """After a lab was made: `formed` saved again when the lab changed, or when it has none yet,
    so that a reset returns to the lab as it is now. None when it was left as it was."""
    if not changed and load_snapshot(config, lab_name, DEFAULT_SNAPSHOT) is not None:
        return None
    return save_snapshot(config, lab_name, DEFAULT_SNAPSHOT, progress=progress, baseline=baseline)


def remove_snapshot(config: Config, lab_name: str, name: str) -> list[str]:
    with open_lab(config, lab_name, lock=True) as session:
        config, lab = session.config, session.lab
        removed = [n.name for n in lab.nodes if session.hv.delete_snapshot(n.domain, name)]
        path = _snapshot_dir(config, lab_name) / f"{name}.json"
        if not removed and not path.exists():
            raise NotFound(f"lab {lab_name} has no snapshot {name} "
                           f"(snapshots: {', '.join(r.name for r in list_snapshots(config, lab_name)) or 'none'})")
        path.unlink(missing_ok=True)
        return removed


def sync_clocks(hv: Hypervisor, lab: Lab) -> None:
    """Every guest clock set from its (host-driven) hardware clock through the guest agent: a
    reverted guest stands at snapshot time, and guests drift by seconds under TCG anyway."""
    def sync(node):
        last: Exception | None = None
        for _ in range(20):  # the agent answers a moment after resume
            try:
                hv.sync_clock(node.domain)
                return
            except SwarmlabError as e:
                last = e
                time.sleep(0.5)
        raise last
    each_node(sync, lab.nodes)
