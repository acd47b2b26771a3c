"""Reading a swarm while a drill breaks it: every surviving manager is asked at once and the
first answer counts, because a manager's API hangs during an election.

Reads go over one kept Engine API session per manager (engine_api.KeptEngineAPI), not the docker CLI: a
CLI call costs ~0.6 s of emulated CPU, so polling three managers every second with it loaded
the very nodes being timed. A manager still busy with an earlier request is not asked again,
and a request that times out closes its session, so a slow swarm never piles up requests.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FuturesTimeout, as_completed
from urllib.parse import quote

from fabric import Connection

from swarmlab.adapters.engine_api import KeptEngineAPI
from swarmlab.adapters.remote import run
from swarmlab.core import swarm
from swarmlab.core.command import Command
from swarmlab.core.timeline import API_TIMEOUT


class ManagerAPI(KeptEngineAPI):
    """A manager's kept session, with a flag for a request still out."""

    def __init__(self, conn: Connection):
        super().__init__(conn)
        self.busy = threading.Lock()  # held while a request is out


class Survivors:
    """The managers of a lab; ask all at once, take the first answer."""

    def __init__(self, managers: dict[str, ManagerAPI]):
        self.managers = managers
        # Room for a few hung calls per manager while later polls go on.
        self.pool = ThreadPoolExecutor(max_workers=4 * max(1, len(managers)))

    @classmethod
    def over(cls, conns: dict[str, Connection]) -> "Survivors":
        return cls({name: ManagerAPI(conn) for name, conn in conns.items()})

    def _first(self, futures: list, timeout: float):
        try:
            for future in as_completed(futures, timeout=timeout + 1):
                if future.exception() is None:
                    return future.result()
        except FuturesTimeout:
            pass
        return None

    def get(self, path: str, exclude: set[str] = frozenset(), timeout: float = API_TIMEOUT):
        """The first answer to GET `path` from a manager not excluded, or None when none
        answers in time. A manager whose previous request is still out is skipped."""
        def ask(manager: ManagerAPI):
            try:
                return manager.get(path, timeout)
            finally:
                manager.busy.release()

        futures = []
        for name, manager in self.managers.items():
            if name not in exclude and manager.busy.acquire(blocking=False):
                futures.append(self.pool.submit(ask, manager))
        return self._first(futures, timeout) if futures else None

    def ask(self, command: Command, exclude: set[str] = frozenset(), timeout: float = API_TIMEOUT) -> str | None:
        """A change through the CLI (node update, demote, service create): the first
        manager's stdout, or None when none answered in time or every one failed."""
        futures = [self.pool.submit(run, m.conn, command, timeout) for n, m in self.managers.items() if n not in exclude]
        return self._first(futures, timeout)

    def nodes(self, exclude: set[str] = frozenset(), timeout: float = API_TIMEOUT) -> list[swarm.SwarmNode] | None:
        answer = self.get("/nodes", exclude, timeout)
        return swarm.parse_api_nodes(answer) if isinstance(answer, list) else None

    def services(self, exclude: set[str] = frozenset(), timeout: float = API_TIMEOUT) -> list[swarm.Service] | None:
        answer = self.get("/services?status=true", exclude, timeout)
        return swarm.parse_api_services(answer) if isinstance(answer, list) else None

    def tasks(self, services: list[str] | None, exclude: set[str], nodes: list[swarm.SwarmNode] | None = None,
              timeout: float = API_TIMEOUT) -> dict[str, tuple[int, list[swarm.Task]]] | None:
        """Desired replicas and running-desired tasks per service (all when services is None)."""
        listed = self.services(exclude, timeout)
        if listed is None:
            return None
        wanted = [s for s in listed if services is None or s.name in services]
        if not wanted:
            return {}
        filters = json.dumps({"desired-state": ["running"], "service": [s.id for s in wanted]})
        answer = self.get(f"/tasks?filters={quote(filters)}", exclude, timeout)
        nodes = nodes if nodes is not None else self.nodes(exclude, timeout)
        if not isinstance(answer, list) or nodes is None:
            return None
        tasks = swarm.parse_api_tasks(answer, wanted, nodes)
        return {s.name: (s.desired, [t for t in tasks if t.name.rsplit(".", 1)[0] == s.name]) for s in wanted}

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for manager in self.managers.values():
            if manager.busy.acquire(blocking=False):  # one still out closes when it times out
                manager.close()
                manager.busy.release()
