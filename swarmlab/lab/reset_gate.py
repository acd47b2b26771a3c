"""The health gate a reset ends with, and reading the swarm from one manager: what a reset
promises (the baseline's nodes, roles, leader and services), clocks and DNS."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from fabric import Connection

from swarmlab.adapters.dns import dns_answers
from swarmlab.adapters.hypervisor import Hypervisor
from swarmlab.adapters.remote import HostKeyMismatch, RemoteError
from swarmlab.config import Config
from swarmlab.core import baseline as bl
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import Lab, each_node
from swarmlab.lab.session import close, connect_nodes
from swarmlab.lab.snapshots import read_state, sync_clocks
from swarmlab.waiting import poll_until

Progress = Callable[[str], None]


def check_health(config: Config, hv: Hypervisor, lab: Lab, baseline: bl.SwarmState | None,
                 conns: dict[str, Connection] | None = None, timings: dict[str, float] | None = None) -> list[str]:
    """The gate's verdict now: what a reset promises (the baseline's nodes, roles, leader and
    services, as one manager sees them), clocks and DNS. Clocks found off are synced meanwhile,
    in parallel: right after a revert both took seconds each. Logs in to one manager at a
    time, the baseline's leader first, unless given live connections. `timings` gets what the
    clocks and the swarm's read took."""
    began = time.monotonic()
    timings = timings if timings is not None else {}

    def clocks_synced() -> dict[str, float | None]:
        offsets = synced_clock_offsets(hv, lab)
        timings["clocks_s"] = round(time.monotonic() - began, 2)
        return offsets
    with ThreadPoolExecutor(max_workers=1) as pool:
        clocks = pool.submit(clocks_synced)
        errors: dict[str, RemoteError] = {}
        if conns is not None:
            now = read_state(conns) if baseline is not None else None
        elif baseline is None:  # a lab with no swarm: every node is only logged in to
            conns, errors = connect_nodes(config, lab, "answering")
            close(conns)
            now = None
        else:
            conns, now, errors = manager_session(config, lab, baseline)
            close(conns)
        timings["swarm_s"] = round(time.monotonic() - began, 2)
        offsets = clocks.result()
    host_keys_ok = {name: not isinstance(error, HostKeyMismatch) for name, error in errors.items()}
    problems = [f"{name}: {error}" for name, error in errors.items() if host_keys_ok[name]]
    dns_ok = {n.name: dns_answers(config, n.fqdn) == {n.ip} for n in lab.nodes}
    return problems + bl.health_problems(baseline, now, offsets, dns_ok, host_keys_ok)


def manager_session(config: Config, lab: Lab, baseline: bl.SwarmState
                    ) -> tuple[dict[str, Connection], bl.SwarmState | None, dict[str, RemoteError]]:
    """(a connection to the first manager that answers with the swarm's state, that state, why
    those tried before did not), the baseline's leader first: one login, where every node's
    took seconds of emulated CPU at once. The connection is the caller's to close."""
    errors: dict[str, RemoteError] = {}
    for node in [n for name in baseline.managers_leader_first if (n := lab.node(name)) is not None]:
        conns, failed = connect_nodes(config, Lab(lab.name, [node]), "answering")
        errors.update(failed)
        now = read_state(conns)
        if now is not None:
            return conns, now, errors
        close(conns)
    return {}, None, errors


def manager_session_within(config: Config, lab: Lab, baseline: bl.SwarmState, seconds: float
                           ) -> tuple[dict[str, Connection], bl.SwarmState | None, bool]:
    """manager_session(), given up after `seconds`: (connections, state, whether it answered in
    time). A read given up on goes on alone and closes its connection when it ends."""
    if seconds <= 0:
        return {}, None, False
    lock, box = threading.Lock(), {}

    def work() -> None:
        conns, now, _ = manager_session(config, lab, baseline)
        with lock:
            if box.get("abandoned"):
                close(conns)
            else:
                box["read"] = (conns, now)
    worker = threading.Thread(target=work, name=f"read-swarm-{lab.name}", daemon=True)
    worker.start()
    worker.join(None if seconds == float("inf") else seconds)
    with lock:
        if "read" in box:
            return *box["read"], True
        box["abandoned"] = True
    return {}, None, False


def synced_clock_offsets(hv: Hypervisor, lab: Lab) -> dict[str, float | None]:
    """Every node's clock offset, after syncing each that is off by more than the gate allows
    (a reverted guest stands at snapshot time; an agent that answered late set a late time)."""
    def one(node) -> float | None:
        offset = hv.guest_clock_offset(node.domain)
        if offset is None or abs(offset) > bl.CLOCK_TOLERANCE:
            try:
                sync_clocks(hv, Lab(lab.name, [node]))  # waits for an agent that answers a moment after resume
            except SwarmlabError:
                return offset
            offset = hv.guest_clock_offset(node.domain)
        return offset
    return dict(zip((n.name for n in lab.nodes), each_node(one, lab.nodes)))


GATE_EVERY_S = 1.0  # between two reads of a gate that still fails


def wait_healthy(config: Config, hv: Hypervisor, lab: Lab, baseline: bl.SwarmState | None, timeout: float,
                 progress: Progress, conns: dict[str, Connection] | None = None,
                 timings: dict[str, float] | None = None) -> list[str]:
    """Polls the gate until it passes or `timeout` runs out; returns what is still wrong. Live
    connections, when given, serve the first check (the state level keeps its own). `timings`
    gets the first check's parts and the whole wait."""
    began = time.monotonic()
    timings = timings if timings is not None else {}
    state = {"first": True, "conns": conns, "problems": []}

    def healthy() -> bool:
        problems = state["problems"] = check_health(config, hv, lab, baseline, state["conns"],
                                                    timings if state["first"] else None)
        state["first"], state["conns"] = False, None
        timings["gate_s"] = round(time.monotonic() - began, 2)
        if problems:
            progress(f"waiting for health: {problems[0]}" + (f" (+{len(problems) - 1})" if len(problems) > 1 else ""))
        return not problems
    try:  # Ctrl-C stops the wait in a worker thread too (`reset --all`)
        poll_until(healthy, timeout, GATE_EVERY_S, GateTimedOut)
    except GateTimedOut:
        pass
    return state["problems"]


class GateTimedOut(SwarmlabError):
    """The gate still fails at the deadline: what fails is the answer, not an error."""


# --- the levels ------------------------------------------------------------------------------
