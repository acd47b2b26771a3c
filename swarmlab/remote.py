"""SSH to lab nodes with fabric: the lab's key, and a known_hosts file per lab.

Host keys are recorded at first contact and verified on every later one; a changed key is
refused. Recording appends one line under a lock: paramiko's AutoAddPolicy rewrote the
whole file from its own copy, so parallel first contacts dropped each other's lines.
Every command is a `command.Command`: arguments quoted, secrets masked in every message.
"""

from __future__ import annotations

import base64
import fcntl
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko
from fabric import Connection

from .command import Command, Fact, redact
from .errors import SwarmlabError
from .waiting import poll_until

T = TypeVar("T")


class RemoteError(SwarmlabError):
    pass


class HostKeyMismatch(RemoteError):
    """The node's host key differs from the one recorded: never retried."""


class AuthenticationFailed(RemoteError):
    pass


class CommandFailed(RemoteError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def record_host_key(known_hosts: Path, host: str, public_key_line: str) -> bool:
    """Records a host key learned out of band (an `ssh_host_*.pub` line, read through the guest
    agent) before the first SSH contact, so that contact is verified, not trusted. Returns
    False when the line is not a key; a different key already recorded is refused."""
    parts = public_key_line.split()
    if len(parts) < 2:
        return False
    try:
        key = paramiko.PKey.from_type_string(parts[0], base64.b64decode(parts[1]))
    except (paramiko.SSHException, ValueError, TypeError):
        return False
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(mode=0o600, exist_ok=True)
    RecordHostKey(known_hosts).missing_host_key(paramiko.SSHClient(), host, key)
    return True


class RecordHostKey(paramiko.MissingHostKeyPolicy):
    """Trust on first use, recorded by appending one line under an exclusive lock; a key that
    another connection recorded meanwhile must match."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            recorded = paramiko.HostKeys()
            recorded.load(str(self.path))
            known = (recorded.lookup(hostname) or {}).get(key.get_name())
            if known is not None and known != key:
                raise paramiko.BadHostKeyException(hostname, key, known)
            if known is None:
                with open(self.path, "a") as f:
                    f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


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
    conn.client.get_host_keys().load(str(target.known_hosts))
    conn.client.set_missing_host_key_policy(RecordHostKey(target.known_hosts))
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise HostKeyMismatch(f"{target.host} presented a different host key than recorded in "
                              f"{target.known_hosts}: if the node was recreated, remove its line there") from None
    except paramiko.AuthenticationException:
        raise AuthenticationFailed(f"SSH authentication failed for {target.user}@{target.host} "
                                   f"with key {target.key}") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        raise RemoteError(f"SSH to {target.user}@{target.host} failed: {e or type(e).__name__}") from None
    return conn


def run(conn: Connection, command: Command, timeout: float = 120, check: bool = True) -> str:
    """Runs a command; returns stdout. Output is captured, never echoed; secrets are blanked
    out of any message built here."""
    if not isinstance(command, Command):
        raise TypeError("remote.run takes a command.Command, so that every argument is quoted")
    try:
        result = conn.run(command.shell, hide=True, warn=True, timeout=timeout, in_stream=False)
    except Exception as e:  # invoke's CommandTimedOut and transport errors
        raise RemoteError(f"{conn.host}: `{command.shown.split()[0]}` failed: {type(e).__name__}") from None
    if check and result.exited != 0:
        tail = redact(" | ".join((result.stderr or result.stdout).strip().splitlines()[-3:]))
        raise CommandFailed(f"{conn.host}: `{command.shown}` exited {result.exited}: {tail}", result.exited)
    return result.stdout


def read(conn: Connection, fact: Fact[T], timeout: float = 120) -> T:
    """Runs a fact's command and parses its output."""
    return fact.parse(run(conn, fact.command, timeout=timeout))


class EngineAPI:
    """The node's Docker Engine API over `docker system dial-stdio` in one SSH exec channel
    (what the docker CLI itself does for ssh:// hosts), with HTTP keep-alive: one docker
    process for any number of requests, where each CLI call costs ~0.6 s under TCG. Also for
    what the CLI cannot take, such as a whole service spec."""

    def __init__(self, conn: Connection, timeout: float = 60):
        import http.client
        self.host = conn.host
        self.channel = conn.client.get_transport().open_session(timeout=timeout)
        self.channel.settimeout(timeout)
        self.channel.exec_command("docker system dial-stdio")
        self.http = http.client.HTTPConnection("docker", timeout=timeout)
        self.http.sock = self.channel  # http.client only needs sendall() and makefile()

    def __enter__(self) -> "EngineAPI":
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """(HTTP status, decoded JSON or text)."""
        import http.client
        import json
        try:
            self.http.request(method, path, body=None if body is None else json.dumps(body),
                              headers={"Content-Type": "application/json", "Host": "docker"})
            response = self.http.getresponse()
            data = response.read().decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            raise RemoteError(f"{self.host}: Docker API {method} {path} failed: {type(e).__name__}") from None
        try:
            return response.status, json.loads(data) if data.strip() else None
        except ValueError:
            return response.status, data

    def get(self, path: str):
        status, answer = self.call("GET", path)
        if status >= 300:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise RemoteError(f"{self.host}: Docker API GET {path}: {status} {message}")
        return answer


def port_open(host: str, port: int = 22, timeout: float = 2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(4).startswith(b"SSH") if port == 22 else True
    except OSError:
        return False


def wait_for_ssh(target: SshTarget, timeout: float) -> Connection:
    """A connection once sshd answers. A changed host key or a refused key fails at once."""
    last: list[RemoteError] = []

    def attempt() -> Connection | None:
        if not port_open(target.host):
            return None
        try:
            return connect(target)
        except (HostKeyMismatch, AuthenticationFailed):
            raise
        except RemoteError as e:
            last[:] = [e]
            return None
    return poll_until(attempt, timeout, 2, lambda: RemoteError(
        f"sshd on {target.host} did not answer within {timeout:g} s" + (f" (last: {last[0]})" if last else "")
        + ": check the node's console with `virsh console`"))
