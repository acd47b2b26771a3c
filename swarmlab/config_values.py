"""The validators of swarmlab.toml's values: each takes the raw TOML value and returns the
typed one, or raises ValueError naming what is allowed. Pure."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from swarmlab.errors import SwarmlabError

# Names the CLI shows as defaults, here so that `--help` needs no libvirt or SSH library
DEFAULT_SNAPSHOT = "formed"  # the snapshot `up` takes and `reset` returns to
SUITES = ("bookworm", "trixie")  # Debian 12 and 13, the releases templates are built from
DEFAULT_SUITE = "trixie"  # the current stable, with docker.io 26

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEBIAN_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")  # Debian policy 5.6.1


def is_dns_label(text: str) -> bool:
    return bool(DNS_LABEL.match(text))


# Validators take the raw TOML value and return the typed one, or raise ValueError(allowed).
def nonempty(value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def label(value):
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValueError("a DNS label: lowercase letters, digits and '-', 1-63 characters")
    return value


def int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value
    return check


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def choice(*allowed: str) -> Callable[[Any], str]:
    def check(value):
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value
    return check


def zone(value):
    if not isinstance(value, str):
        raise ValueError("a DNS name such as lab.swarmlab.test.")
    name = value.lower().rstrip(".")
    if not name or not all(is_dns_label(part) for part in name.split(".")):
        raise ValueError("a DNS name such as lab.swarmlab.test.")
    return name + "."


def url(value):
    if not isinstance(value, str) or not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
        raise ValueError("an http:// or https:// URL such as http://127.0.0.1:8081")
    return value.rstrip("/")


def cidr(value):
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ValueError, TypeError):
        raise ValueError("an IPv4 network in CIDR form such as 10.77.0.0/24") from None
    if not 16 <= net.prefixlen <= 28:
        raise ValueError("an IPv4 network with a prefix from /16 to /28")
    return net


def lab_range(value):
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except (ValueError, TypeError):
        net = None
    if net is None or not 16 <= net.prefixlen <= 23:
        raise ValueError("an IPv4 range from /16 to /23 that labs get their own /24 from, such as 10.80.0.0/16")
    return net


def host_port(value):
    # An IP address, not a host name: a name would be resolved through the very DNS being
    # verified, and an unresolvable one ended in a 30 s timeout instead of an error.
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError("IP:PORT of the server that answers for the zone, such as 127.0.0.1:5300 "
                         "(an IP address, not a host name)") from None
    return value


def optional_text(value):
    return "" if value == "" else nonempty(value)


def address(value):
    try:
        return "" if value == "" else str(ipaddress.IPv4Address(nonempty(value)))
    except ipaddress.AddressValueError:
        raise ValueError("an IPv4 address such as 192.168.10.5") from None


def user_host_port(value):
    text = nonempty(value)
    user, _, host = text.rpartition("@")
    name, _, port = host.partition(":")
    if not user or not name or (port and not port.isdigit()):
        raise ValueError("user@host or user@host:port, such as root@h2")
    return text


def package(value):
    if not isinstance(value, str) or not DEBIAN_PACKAGE.match(value):
        raise ValueError("a Debian package name such as docker.io or docker-ce")
    return value


# One label grammar for the config file and the command line.
LABEL = re.compile(r"^(?P<node>[a-z0-9-]+):(?P<key>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<value>[^\s]*)$")


@dataclass(frozen=True)
class NodeLabel:
    node: str
    key: str
    value: str


def parse_label(spec: str) -> NodeLabel:
    m = LABEL.match(spec)
    if not m:
        raise SwarmlabError(f"label {spec!r} is not NODE:KEY=VALUE (e.g. swr1:placepoint=gdc)")
    return NodeLabel(m["node"], m["key"], m["value"])



def label_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('a list of "NODE:KEY=VALUE" strings such as ["swr1:env=prod"]')
    for spec in value:
        try:
            parse_label(spec)
        except SwarmlabError as e:
            raise ValueError(f'a list of "NODE:KEY=VALUE" strings; {e}') from None
    return tuple(value)


def path_list(value):
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError('a list of paths to image tarballs (docker save format)')
    return tuple(Path(v).expanduser() for v in value)


def path(value):
    if not isinstance(value, str) or not value:
        raise ValueError("a file system path")
    return Path(value).expanduser()


def optional_path(value):
    return None if value in ("", None) else path(value)


def remote_dir(value):
    """A directory on another machine: absolute, nothing relative to this one."""
    if not isinstance(value, str) or not value.startswith("/") or ".." in PurePosixPath(value).parts:
        raise ValueError("an absolute directory on that host, like /var/lib/libvirt/swarmlab")
    return PurePosixPath(value)


# A host on another machine keeps its pools under libvirt's own directory, unless [[hosts]]
# pool_dir says otherwise: the controller's state and cache paths mean nothing there.
