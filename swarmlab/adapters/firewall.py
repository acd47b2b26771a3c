"""What a lab's nodes may reach on the host that runs them, as an nftables table swarmlab owns
(`inet swarmlab`): replaced whole on every apply, removed by `host down`.

A student has root on their nodes. From a lab network (every swarmlab bridge is `sl-*`) a node
may reach its own lab (bridged, never filtered here), DNS and DHCP, and the registry mirror;
not sshd, libvirt, the PowerDNS API or anything else the host listens on, on any of its
addresses; and of the other hosts of a class (`protected`) only DNS and the mirror. Traffic to
the world beyond stays as the lab network's NAT allows it."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess

from swarmlab.core.command import Command, Raw, sh
from swarmlab.errors import SwarmlabError

TABLE = "swarmlab"
LAB_BRIDGES = "sl-*"
NODE_UDP = (53, 67)  # DNS, DHCP


class FirewallError(SwarmlabError):
    pass


def ruleset(protected: list[str], mirror_port: int) -> str:
    """The table for one host, as `nft -f` takes it; replacing it is atomic. Nodes reach TCP
    on DNS and the registry mirror's port."""
    v4 = sorted({a for a in protected if ipaddress.ip_address(a).version == 4}, key=ipaddress.ip_address)
    v6 = sorted({a for a in protected if ipaddress.ip_address(a).version == 6}, key=ipaddress.ip_address)
    tcp, udp = ", ".join(map(str, (53, mirror_port))), ", ".join(map(str, NODE_UDP))
    lines = [f"table inet {TABLE}", f"delete table inet {TABLE}", f"table inet {TABLE} {{"]
    for name, kind, found in (("protected4", "ipv4_addr", v4), ("protected6", "ipv6_addr", v6)):
        lines.append(f"  set {name} {{ type {kind};" + (f" elements = {{ {', '.join(found)} }};" if found else "")
                     + " }")
    lines += [
        "  chain input {",
        "    type filter hook input priority filter - 1; policy accept;",
        f'    iifname != "{LAB_BRIDGES}" accept',
        "    ct state established,related accept",
        f"    udp dport {{ {udp} }} accept",
        f"    tcp dport {{ {tcp} }} accept",
        "    meta l4proto { icmp, ipv6-icmp } accept",
        "    counter drop",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 1; policy accept;",
        f'    iifname != "{LAB_BRIDGES}" accept',
        "    ct state established,related accept",
    ]
    for family, name in (("ip", "protected4"), ("ip6", "protected6")):
        lines += [f"    {family} daddr @{name} udp dport 53 accept",
                  f"    {family} daddr @{name} tcp dport {{ {tcp} }} accept",
                  f"    {family} daddr @{name} counter drop"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def addresses(names: list[str]) -> list[str]:
    """Addresses of host names and addresses; a name that does not resolve is left out (a
    host that cannot be reached cannot be reached from a node either)."""
    found = set()
    for name in filter(None, names):
        try:
            found.add(str(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        try:
            found |= {info[4][0] for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
        except OSError:
            pass
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


def apply_here(text: str) -> None:
    """Installs the table in the network namespace this process is in."""
    if not shutil.which("nft"):
        raise FirewallError("nft not found: apt install nftables (scripts/install-host does); without it nodes "
                            "could reach this host's management ports")
    done = subprocess.run(["nft", "-f", "-"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        raise FirewallError(f"nft refused swarmlab's node filter: {done.stderr.strip()[:300]}")


def remove_here() -> bool:
    """Removes the table; True if there was one."""
    if not shutil.which("nft"):
        return False
    return subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True).returncode == 0


def apply_command(text: str) -> Command:
    """The same over SSH on a host on another machine (the table arrives as $1, quoted)."""
    return Command(sh('printf "%s" "$1" | nft -f -'), Raw("sh"), text)


def remove_command() -> Command:
    return Command(sh(f"nft delete table inet {TABLE} 2>/dev/null || true"))


def installed_here() -> str:
    """The table as nft lists it now (empty when there is none)."""
    done = subprocess.run(["nft", "-s", "list", "table", "inet", TABLE], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else ""
