"""A student's laptop for the tests: a network namespace of its own, joined to the machine's
root namespace by a veth pair on a test-only subnet (never to the lab host's namespace), as a
laptop on the classroom network reaches the instructor's machine. No packet leaves the machine.
Its browser is Debian's chromium, started inside it and driven by chromedriver over a pipe."""

from __future__ import annotations

import subprocess
from pathlib import Path

from swarmlab.adapters import netns

NAME = "swl-test-laptop"
MACHINE = "10.250.0.1"  # the root namespace's end: where the portal listens, as students see it
ADDRESS = "10.250.0.2"
ROOT_SIDE = "swl-lap0"


def _root(*cmd: str) -> subprocess.CompletedProcess:
    return netns.run_in_host_netns(list(cmd), capture_output=True, text=True)


def start() -> None:
    remove()
    subprocess.run(["ip", "netns", "add", NAME], check=True)
    for cmd in (["ip", "link", "add", ROOT_SIDE, "type", "veth", "peer", "name", "eth0", "netns", NAME],
                ["ip", "addr", "add", f"{MACHINE}/24", "dev", ROOT_SIDE], ["ip", "link", "set", ROOT_SIDE, "up"]):
        done = _root(*cmd)
        assert done.returncode == 0, (cmd, done.stderr)
    for cmd in (["addr", "add", f"{ADDRESS}/24", "dev", "eth0"], ["link", "set", "eth0", "up"], ["link", "set", "lo", "up"]):
        subprocess.run(["ip", "-n", NAME, *cmd], check=True)


def remove() -> None:
    _root("ip", "link", "del", ROOT_SIDE)
    subprocess.run(["ip", "netns", "del", NAME], capture_output=True)


def run(*cmd: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NAME, *cmd], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def fetch(url: str, method: str = "GET", body: str | None = None) -> tuple[int, str]:
    """An HTTPS request from the laptop (the portal's certificate is self-signed: -k)."""
    args = ["curl", "-sk", "-m", "20", "-X", method, "-o", "/dev/stdout", "-w", "\n%{http_code}", url]
    if body is not None:
        args += ["-H", "Content-Type: application/json", "--data", body]
    done = run(*args)
    text, _, code = done.stdout.rpartition("\n")
    return int(code or 0), text


def chromium(directory: Path) -> str:
    """A chromium that runs inside the laptop; chromedriver talks to it over a pipe
    (--remote-debugging-pipe), since its debugging port would be in the laptop's namespace."""
    wrapper = directory / "chromium-on-the-laptop"
    wrapper.write_text(f"#!/bin/sh\nexec ip netns exec {NAME} /usr/bin/chromium \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def on_the_machine(cmd: list[str]) -> tuple[list[str], tuple[int, ...]]:
    """A command for the machine's own (root) namespace, where the instructor runs the portal."""
    return netns.in_host_netns(cmd)
