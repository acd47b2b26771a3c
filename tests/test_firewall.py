"""The node filter, tried for real: a node in a namespace of its own behind a swarmlab bridge
(`sl-*`) in a host namespace, as libvirt wires them. It reaches DNS and the registry mirror
on the host and nothing else the host listens on; with the filter removed it reaches all."""

import os
import subprocess
import sys
import uuid

import pytest

from swarmlab.adapters import firewall

LISTEN = ("import socket, sys\n"
          "socks = []\n"
          "for port in map(int, sys.argv[1:]):\n"
          "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "    s.bind(('0.0.0.0', port)); s.listen(); socks.append(s)\n"
          "print('ready', flush=True)\n"
          "sys.stdin.read()\n")
CONNECT = ("import socket, sys\n"
           "try:\n"
           "    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close(); print('open')\n"
           "except OSError:\n"
           "    print('closed')\n")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def host_and_node():
    if os.geteuid() != 0:
        pytest.skip("namespaces need root")
    tag = uuid.uuid4().hex[:6]
    host, node, bridge = f"swl-fwh-{tag}", f"swl-fwn-{tag}", f"sl-fw{tag}"
    ip("netns", "add", host)
    ip("netns", "add", node)
    try:
        ip("-n", host, "link", "add", bridge, "type", "bridge")
        ip("-n", host, "link", "add", "tap0", "type", "veth", "peer", "name", "eth0", "netns", node)
        ip("-n", host, "link", "set", "tap0", "master", bridge)
        for ns, dev, addr in ((host, bridge, "10.251.0.1/24"), (node, "eth0", "10.251.0.2/24")):
            ip("-n", ns, "addr", "add", addr, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", host, "link", "set", "tap0", "up")
        listener = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c", LISTEN, "22", "5000", "16509"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "ready"
        try:
            yield host, node
        finally:
            listener.kill()
            listener.wait()
    finally:
        ip("netns", "del", host)
        ip("netns", "del", node)


def reaches(node: str, port: int) -> bool:
    out = subprocess.run(["ip", "netns", "exec", node, sys.executable, "-c", CONNECT, "10.251.0.1", str(port)],
                         capture_output=True, text=True, timeout=20).stdout.strip()
    return out == "open"


def in_namespace(ns: str, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], input=stdin, capture_output=True, text=True)


def test_a_node_reaches_the_mirror_on_its_host_and_no_management_port(host_and_node):
    host, node = host_and_node
    assert [reaches(node, p) for p in (22, 5000, 16509)] == [True, True, True]  # the premise: all listen
    applied = in_namespace(host, "nft", "-f", "-", stdin=firewall.ruleset(["10.200.0.2"], 5000))
    assert applied.returncode == 0, applied.stderr
    assert {p: reaches(node, p) for p in (22, 5000, 16509)} == {22: False, 5000: True, 16509: False}
    # applied again it replaces itself (one table), and removing it opens everything again
    assert in_namespace(host, "nft", "-f", "-", stdin=firewall.ruleset(["10.200.0.2"], 5000)).returncode == 0
    assert in_namespace(host, "nft", "list", "tables").stdout.count("inet swarmlab") == 1
    assert in_namespace(host, "nft", "delete", "table", "inet", firewall.TABLE).returncode == 0
    assert reaches(node, 22)


def test_the_ruleset_names_the_class_hosts_and_lets_only_dns_and_the_mirror_through():
    text = firewall.ruleset(["10.200.0.2", "fd00::2", "10.200.0.2"], 5000)
    assert "elements = { 10.200.0.2 }" in text and "elements = { fd00::2 }" in text
    assert 'iifname != "sl-*" accept' in text and "tcp dport { 53, 5000 } accept" in text
    assert firewall.addresses(["10.1.2.3", "", "127.0.0.1", "no-such-host.invalid"]) == ["10.1.2.3"]


def test_nodes_on_a_class_host_reach_no_port_of_the_controller_but_dns_and_the_mirror():
    """The controller's own addresses (its sshd, the portal), not only the services address, are
    in the set a node on any of the class's hosts reaches only DNS and the mirror at."""
    from swarmlab import config as configuration
    from swarmlab.adapters.netns import interface_networks
    from swarmlab.host.labhost import protected_addresses
    config = configuration.Config(services_address="10.200.0.1")
    assert protected_addresses(config, machine=["192.0.2.2", "fd00::2"]) == ["10.200.0.1", "192.0.2.2", "fd00::2"]
    machine = interface_networks('[{"ifname": "lo", "addr_info": [{"local": "127.0.0.1", "prefixlen": 8, '
                                 '"scope": "host"}]}, {"ifname": "eth0", "addr_info": [{"local": "192.0.2.2", '
                                 '"prefixlen": 24, "scope": "global"}, {"local": "fe80::1", "prefixlen": 64, '
                                 '"scope": "link"}]}]')
    assert [str(i) for i in machine] == ["192.0.2.2/24"]
    # and this machine's own, read for real: every global address of it is protected
    from swarmlab.adapters import netns
    mine = {str(i.ip) for i in netns.machine_networks("swl-no-such-namespace")}
    assert mine and mine <= set(protected_addresses(config))
    # a command started inside a lab host's namespace cannot read them: it is told so, and falls
    # back on what `host up` read (hoststate.machine_networks), not on the namespace's own
    ns = f"swl-fwm-{uuid.uuid4().hex[:6]}"
    ip("netns", "add", ns)
    try:
        ip("-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1")
        ip("-n", ns, "addr", "add", "10.252.0.1/24", "dev", "d0")
        inside = in_namespace(ns, sys.executable, "-c", "from swarmlab.adapters import netns; "
                              f"print(netns.machine_networks('{ns}'))")
        assert inside.stdout.strip() == "None", inside.stdout + inside.stderr  # before entering as after
    finally:
        ip("netns", "del", ns)
