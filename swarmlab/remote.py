"""SSH to lab nodes with fabric: the lab's key, and a known_hosts file per lab.

Host keys are recorded at first contact and verified on every later one (paramiko's
AutoAddPolicy writes to the file loaded with load_host_keys; a changed key is refused).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import paramiko
from fabric import Connection

from .errors import SwarmlabError


class RemoteError(SwarmlabError):
    pass


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    key: Path
    known_hosts: Path


def connect(target: SshTarget, timeout: float = 10) -> Connection:
    target.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    target.known_hosts.touch(mode=0o600, exist_ok=True)
    conn = Connection(target.host, user=target.user, connect_timeout=timeout, connect_kwargs={
        "key_filename": str(target.key), "look_for_keys": False, "allow_agent": False,
        "banner_timeout": timeout, "auth_timeout": timeout})
    conn.client.load_host_keys(str(target.known_hosts))
    conn.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise RemoteError(f"{target.host} presented a different host key than recorded in "
                          f"{target.known_hosts}: if the node was recreated, remove its line there") from None
    except paramiko.AuthenticationException:
        raise RemoteError(f"SSH authentication failed for {target.user}@{target.host} "
                          f"with key {target.key}") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        raise RemoteError(f"SSH to {target.user}@{target.host} failed: {e or type(e).__name__}") from None
    return conn


def run(conn: Connection, command: str, timeout: float = 120, check: bool = True,
        secret: str | None = None) -> str:
    """Runs a command; returns stdout. Output is captured, never echoed. A `secret` (a join
    token) is blanked out of any message built here."""
    shown = command.replace(secret, "<hidden>") if secret else command
    try:
        result = conn.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
    except Exception as e:  # invoke's CommandTimedOut and transport errors
        raise RemoteError(f"{conn.host}: `{shown.split()[0]}` failed: {type(e).__name__}") from None
    if check and result.exited != 0:
        tail = " | ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        if secret:
            tail = tail.replace(secret, "<hidden>")
        raise RemoteError(f"{conn.host}: `{shown}` exited {result.exited}: {tail}")
    return result.stdout


def port_open(host: str, port: int = 22, timeout: float = 2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(4).startswith(b"SSH") if port == 22 else True
    except OSError:
        return False


def wait_for_ssh(target: SshTarget, timeout: float, cancelled: Callable[[], bool] = lambda: False) -> Connection:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline and not cancelled():
        if port_open(target.host):
            try:
                return connect(target)
            except RemoteError as e:
                if "host key" in str(e) or "authentication" in str(e):
                    raise
                last = e
        time.sleep(2)
    raise RemoteError(f"sshd on {target.host} did not answer within {timeout:g} s"
                      + (f" (last: {last})" if last else "") + ": check the node's console with `virsh console`")
