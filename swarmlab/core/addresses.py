"""Where a lab's nodes live on their network, pure: a MAC that is the same for the same node
every time, and reserved addresses that never meet a dynamic lease."""

from __future__ import annotations

import hashlib
import ipaddress

from swarmlab.config import Config
from swarmlab.errors import SwarmlabError


class AddressError(SwarmlabError):
    pass


def static_range(config: Config) -> list[str]:
    """Reserved addresses come from below the DHCP range, so they never meet a dynamic lease."""
    start = ipaddress.IPv4Address(str(config.gateway)) + 9
    end = ipaddress.IPv4Address(str(config.dhcp_range[0]))
    return [str(ip) for ip in config.cidr.hosts() if start <= ip < end]


def stable_mac(taken: set[str], *identity: str) -> str:
    """The same MAC for the same network/lab/node every time. dnsmasq keeps a lease for an
    hour after its VM is gone and will not hand that address to another MAC; a recreated
    node with its old MAC gets its old address back (and a class sees the same IPs)."""
    for attempt in range(1000):
        digest = hashlib.sha256("/".join([*identity, str(attempt)]).encode()).digest()
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
        if mac not in taken:
            return mac
    raise AddressError("no free MAC address found")  # 1000 collisions in 2^24: not in practice


def assign_addresses(config: Config, nodes: list[tuple[str, str]], reserved: dict[str, str],
                     leases: dict[str, str]) -> list[str]:
    """An IP per (name, mac): the one a lingering lease of that MAC holds if it is free,
    else the lowest address that is neither reserved nor leased to another MAC."""
    static = static_range(config)
    busy = set(reserved.values()) | set(leases.values())
    out = []
    for _name, mac in nodes:
        ip = leases.get(mac)
        if ip not in static or ip in reserved.values() or ip in out:
            ip = next((a for a in static if a not in busy and a not in out), None)
        if ip is None:
            raise AddressError(f"network {config.network} has no address left for reservations "
                           f"({len(static)} in {static[0]}-{static[-1]}, all reserved or leased)")
        out.append(ip)
    return out
