"""One lab's SSH connections and Engine API sessions, kept between a frequent reader's reads
(the portal's Checks): a Check then spawns one process in the guest for its reads, not a login
per node and a `docker` per read, each 0.6-0.9 s of emulated CPU. Everything kept is dropped
when the lab was reset, reverted or rebuilt since it was opened, and a node's part when it
breaks; the next read opens it again."""

from __future__ import annotations

import threading
import time

from fabric import Connection

from swarmlab.adapters.engine_api import KeptEngineAPI
from swarmlab.adapters.remote import RemoteError, connect
from swarmlab.config import Config
from swarmlab.lab.model import Lab, each_node, ssh_target
from swarmlab.lab.reset import last_reset
from swarmlab.lab.session import ANSWER_WITHIN


class KeptNodes:
    def __init__(self):
        self.conns: dict[str, Connection] = {}
        self.apis: dict[str, KeptEngineAPI] = {}
        self.opened = time.time()
        self.lock = threading.Lock()

    def connect(self, config: Config, lab: Lab) -> dict[str, Connection]:
        """Connections to the lab's nodes that answer (within ANSWER_WITHIN s), kept ones reused."""
        with self.lock:
            if last_reset(config, lab.name) >= self.opened or set(self.conns) - {n.name for n in lab.nodes}:
                self._close()
            for name in [n for n, c in self.conns.items() if not c.is_connected]:
                self._drop(name)
            missing = [n for n in lab.nodes if n.name not in self.conns]

            def one(node) -> None:
                try:
                    self.conns[node.name] = connect(ssh_target(config, lab.name, node), timeout=ANSWER_WITHIN)
                except RemoteError:
                    pass
            each_node(one, missing)
            return dict(self.conns)

    def api(self, node: str) -> KeptEngineAPI | None:
        with self.lock:
            if node not in self.conns:
                return None
            return self.apis.setdefault(node, KeptEngineAPI(self.conns[node]))

    def drop(self, node: str) -> None:
        """A node whose session broke: the next read logs in to it again."""
        with self.lock:
            self._drop(node)

    def close(self) -> None:
        with self.lock:
            self._close()

    def _drop(self, node: str) -> None:
        api, conn = self.apis.pop(node, None), self.conns.pop(node, None)
        if api is not None:
            api.close()
        if conn is not None:
            conn.close()

    def _close(self) -> None:
        for node in list(self.conns):
            self._drop(node)
        self.opened = time.time()
