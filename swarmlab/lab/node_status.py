"""Each node of a lab as an instructor checks it by hand: libvirt's state, its DHCP lease,
its DNS record, whether its sshd answers and whether a drill cut its link; and the one cheap
read of libvirt's state the portal's pages ask for often."""

from __future__ import annotations

from swarmlab.adapters.dns import PowerDNS
from swarmlab.adapters.remote import port_open
from swarmlab.config import Config
from swarmlab.errors import SwarmlabError
from swarmlab.lab.model import SSH_ANSWERS_WITHIN, Node, each_node, jump
from swarmlab.lab.session import open_lab


def status(config: Config, lab: str) -> dict:
    with open_lab(config, lab) as session:
        config, hv = session.config, session.hv
        leases = hv.dhcp_leases(config.network)
        try:
            records = {r.name: r.ip for r in PowerDNS.from_config(config).list_a(config.zone)}
            dns_error = None
        except SwarmlabError as e:
            records, dns_error = {}, str(e)
        hop = jump(config)

        # Every node at once, each given SSH_ANSWERS_WITHIN: a loaded guest's sshd (a new
        # sshd-session each time, under TCG) took up to 2.8 s to say hello, so 1.5 s showed
        # busy nodes as down.
        def row(node: Node) -> dict:
            state = hv.domain_state(node.domain)
            running = bool(state and state.running)
            ip = leases.get(node.mac) or node.ip
            return {"node": node.name, "domain": node.domain, "state": state.state if state else "missing",
                    "cut_off": running and bool((cable := hv.cable(node.domain)) and cable.cut_off),  # partition, split
                    "ip": ip if running else node.ip, "lease": bool(leases.get(node.mac)),
                    "dns": node.fqdn, "dns_ip": records.get(node.fqdn),
                    "ssh": running and port_open(ip, 22, timeout=SSH_ANSWERS_WITHIN, jump=hop)}
        rows = each_node(row, session.lab.nodes)
    result = {"lab": lab, "nodes": rows}
    if dns_error:
        result["dns_error"] = dns_error
    return result


def node_states(config: Config, lab: str) -> list[dict]:
    """Each node's state as libvirt says it ("running", "shut off", "missing"...) and whether
    it is up (a paused node is not): one cheap read, no SSH, for pages that ask often."""
    with open_lab(config, lab) as session:
        states = [(n.name, session.hv.domain_state(n.domain)) for n in session.lab.nodes]
    return [{"node": name, "state": state.state if state else "missing",
             "up": bool(state and state.state in ("running", "idle"))} for name, state in states]
