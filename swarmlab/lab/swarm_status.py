"""What a lab's swarm looks like to `status` and the instructor's page: its nodes as one
manager lists them, read through the Engine API, with a session a frequent reader may keep."""

from __future__ import annotations

from fabric import Connection

from swarmlab.adapters.engine_api import KeptEngineAPI
from swarmlab.adapters.remote import RemoteError, connect
from swarmlab.config import Config
from swarmlab.core import swarm
from swarmlab.errors import SwarmlabError
from swarmlab.lab import node_status
from swarmlab.lab.model import Lab, Node, ssh_target
from swarmlab.lab.session import open_lab


class KeptSwarmView:
    """One lab's manager session kept between reads of its swarm, for a reader that asks every
    few seconds (the portal's instructor page): under load an SSH login to a TCG guest took
    5-8 s, a read over a kept session a fraction of that. A session that breaks (the lab was
    reverted, the node went down) is dropped, and the next read logs in again."""

    def __init__(self):
        self.node: str | None = None
        self.conn: Connection | None = None
        self.api: KeptEngineAPI | None = None

    def hold(self, node: str, conn: Connection, api: KeptEngineAPI) -> None:
        self.close()
        self.node, self.conn, self.api = node, conn, api

    def close(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.conn is not None:
            self.conn.close()
        self.node = self.conn = self.api = None


def swarm_view(config: Config, lab: Lab, running: list[Node], kept: KeptSwarmView | None = None
               ) -> tuple[dict[str, swarm.SwarmNode], str | None]:
    """The swarm's nodes as the first running manager lists them: one Engine API read (a
    worker refuses it, and the next node is asked), where `docker info` and `docker node ls`
    cost two CLI starts, seconds each on a loaded TCG host. With `kept`, the session is kept
    for the next read. Returns (by hostname, error)."""
    if kept is not None and kept.api is not None:
        if kept.node in {n.name for n in running}:
            try:
                return swarm.current_members(swarm.parse_api_nodes(kept.api.get("/nodes", timeout=15))), None
            except SwarmlabError:
                pass  # broken, or no longer a manager: log in afresh below
        kept.close()
    tried = []
    for node in running:
        tried.append(node.name)
        try:
            conn = connect(ssh_target(config, lab.name, node), timeout=5)
        except RemoteError:
            continue
        api = KeptEngineAPI(conn)
        try:
            members = swarm.current_members(swarm.parse_api_nodes(api.get("/nodes", timeout=15)))
        except SwarmlabError:
            api.close()
            conn.close()
            continue
        if kept is not None:
            kept.hold(node.name, conn, api)
        else:
            api.close()
            conn.close()
        return members, None
    return {}, f"no manager answered (tried {', '.join(tried) or 'no running node'})"



def status_with_swarm(config: Config, lab_name: str, kept: KeptSwarmView | None = None) -> dict:
    """`status`: the lab's rows, plus each node's swarm columns read from one manager (over the
    session `kept` holds, when given)."""
    data = node_status.status(config, lab_name)
    with open_lab(config, lab_name) as session:
        config, found = session.config, session.lab
    running = [found.node(r["node"]) for r in data["nodes"] if r["ssh"]]
    view, error = swarm_view(config, found, running, kept)
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
