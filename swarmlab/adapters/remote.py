"""SSH to lab nodes with fabric: the lab's key, and a known_hosts file per lab.

Host keys are recorded at first contact and verified on every later one; a changed key is
refused. Recording appends one line under a lock: paramiko's AutoAddPolicy rewrote the
whole file from its own copy, so parallel first contacts dropped each other's lines.
Every command is a `command.Command`: arguments quoted, secrets masked in every message.
"""

from __future__ import annotations

import base64
import fcntl
import select
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import paramiko
from fabric import Connection

from swarmlab.core.command import Command, Fact, redact
from swarmlab.errors import SwarmlabError
from swarmlab.waiting import poll_until

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
class Jump:
    """The sshd of a lab host on another machine, which SSH to its nodes goes through."""
    user: str
    host: str
    port: int
    key: Path | None  # None: the caller's own keys and agent, as `ssh` would use them
    known_hosts: Path

    @classmethod
    def parse(cls, text: str, key: Path | None, known_hosts: Path) -> "Jump":
        user, _, rest = text.rpartition("@")
        host, _, port = rest.partition(":")
        return cls(user or "root", host, int(port or 22), key, known_hosts)

    def proxy_command(self) -> str:
        """The same hop for OpenSSH (`swarmlab ssh`): its jump options must sit in a ProxyCommand,
        since `-J` would not take our key or known_hosts file."""
        key = f"-i {self.key} -o IdentitiesOnly=yes " if self.key else ""
        return (f"ssh {key}-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=accept-new "
                f"-o BatchMode=yes -o LogLevel=ERROR -p {self.port} -W %h:%p {self.user}@{self.host}")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str
    key: Path
    known_hosts: Path
    jump: Jump | None = None


# One SSH connection per jump host for the whole process; every node channel rides on it.
_jumps: dict[Jump, Connection] = {}
_jumps_lock = threading.Lock()


def _open(conn: Connection, known_hosts: Path, what: str, key_hint: str = "") -> None:
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(mode=0o600, exist_ok=True)
    conn.client.get_host_keys().load(str(known_hosts))
    conn.client.set_missing_host_key_policy(RecordHostKey(known_hosts))
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise HostKeyMismatch(f"{what} presented a different host key than recorded in "
                              f"{known_hosts}: if it was recreated, remove its line there") from None
    except paramiko.AuthenticationException:
        raise AuthenticationFailed(f"SSH authentication failed for {what}{key_hint}") from None
    except (OSError, paramiko.SSHException, EOFError) as e:
        raise RemoteError(f"SSH to {what} failed: {e or type(e).__name__}") from None


def jump_connection(jump: Jump, timeout: float = 10) -> Connection:
    with _jumps_lock:
        conn = _jumps.get(jump)
        if conn is not None and conn.is_connected:
            return conn
        kwargs = {"banner_timeout": timeout, "auth_timeout": timeout}
        kwargs.update({"key_filename": str(jump.key), "look_for_keys": False, "allow_agent": False}
                      if jump.key else {})
        conn = Connection(jump.host, user=jump.user, port=jump.port, connect_timeout=timeout, connect_kwargs=kwargs)
        _open(conn, jump.known_hosts, f"lab host {jump.user}@{jump.host}:{jump.port} (the jump to its nodes)")
        conn.transport.set_keepalive(15)
        _jumps[jump] = conn
        return conn


def open_stream(host: str, port: int, timeout: float, jump: Jump | None = None):
    """A connected socket to host:port, or a channel through the jump host: both have
    sendall/recv/makefile/close. Raises OSError when it does not open."""
    if jump is None:
        return socket.create_connection((host, port), timeout=timeout)
    try:
        channel = jump_connection(jump, timeout).transport.open_channel(
            "direct-tcpip", (host, port), ("", 0), timeout=timeout)
    except (RemoteError, paramiko.SSHException, EOFError) as e:
        raise OSError(f"{host}:{port} through {jump.host}: {e}") from None
    channel.settimeout(timeout)
    return channel


def connect(target: SshTarget, timeout: float = 10) -> Connection:
    conn = Connection(target.host, user=target.user, connect_timeout=timeout, connect_kwargs={
        "key_filename": str(target.key), "look_for_keys": False, "allow_agent": False,
        "banner_timeout": timeout, "auth_timeout": timeout},
        gateway=jump_connection(target.jump, timeout) if target.jump else None)
    _open(conn, target.known_hosts, f"{target.user}@{target.host}", f" with key {target.key}")
    return conn


MOST_REPLY_BYTES = 16 << 20  # what a node may answer one command or API call with: a student is root there


class ReplyTooLarge(RemoteError):
    pass


def run(conn: Connection, command: Command, timeout: float = 120, check: bool = True,
        most_bytes: int = MOST_REPLY_BYTES) -> str:
    """Runs a command; returns stdout. Output is captured, never echoed; secrets are blanked
    out of any message built here. The node is untrusted: the whole command has `timeout`
    seconds, however slowly it drips, and may write `most_bytes` at most."""
    exited, stdout, stderr = run_status(conn, command, timeout, most_bytes)
    if check and exited != 0:
        tail = redact(" | ".join((stderr or stdout).strip().splitlines()[-3:]))
        raise CommandFailed(f"{conn.host}: `{command.shown}` exited {exited}: {tail}", exited)
    return stdout


def run_status(conn: Connection, command: Command, timeout: float = 120,
               most_bytes: int = MOST_REPLY_BYTES) -> tuple[int, str, str]:
    """(exit status, stdout, stderr), bounded as `run` says, for a command whose failure is an
    answer rather than an error."""
    if not isinstance(command, Command):
        raise TypeError("remote.run takes a command.Command, so that every argument is quoted")
    name = command.shown.split()[0]
    try:
        return _exec(conn, command.shell, timeout, most_bytes)
    except ReplyTooLarge:
        raise ReplyTooLarge(f"{conn.host}: `{name}` wrote more than {most_bytes >> 10} KiB: stopped reading") from None
    except TimeoutError:
        raise RemoteError(f"{conn.host}: `{name}` failed: it did not finish within {timeout:g} s") from None
    except Exception as e:  # transport errors
        raise RemoteError(f"{conn.host}: `{name}` failed: {type(e).__name__}") from None


def _exec(conn: Connection, shell: str, timeout: float, most_bytes: int) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of one exec channel, read under one deadline and one cap."""
    if not conn.is_connected:
        conn.open()
    deadline = time.monotonic() + timeout
    channel = conn.client.get_transport().open_session(timeout=min(timeout, 30))
    try:
        channel.exec_command(shell)
        channel.shutdown_write()  # no stdin
        streams = {"out": bytearray(), "err": bytearray()}
        exited_at = 0.0
        while True:
            while channel.recv_ready():
                streams["out"] += channel.recv(65536)
            while channel.recv_stderr_ready():
                streams["err"] += channel.recv_stderr(65536)
            if len(streams["out"]) + len(streams["err"]) > most_bytes:
                raise ReplyTooLarge()
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                # a child left in the background may hold the output open: give it a moment, not forever
                exited_at = exited_at or time.monotonic()
                if channel.eof_received or channel.closed or time.monotonic() - exited_at > 2:
                    break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError()
            select.select([channel], [], [], min(left, 1.0))  # woken by output on either stream or the end
        return (channel.recv_exit_status(), streams["out"].decode(errors="replace"),
                streams["err"].decode(errors="replace"))
    finally:
        channel.close()


def read(conn: Connection, fact: Fact[T], timeout: float = 120) -> T:
    """Runs a fact's command and parses its output."""
    return fact.parse(run(conn, fact.command, timeout=timeout))


def port_open(host: str, port: int = 22, timeout: float = 2, jump: Jump | None = None) -> bool:
    try:
        s = open_stream(host, port, timeout, jump)
    except (OSError, RemoteError):
        return False
    try:
        return s.recv(4).startswith(b"SSH") if port == 22 else True
    except (OSError, socket.timeout, EOFError):
        return False
    finally:
        s.close()


def wait_for_ssh(target: SshTarget, timeout: float) -> Connection:
    """A connection once sshd answers. A changed host key or a refused key fails at once."""
    last: list[RemoteError] = []

    def attempt() -> Connection | None:
        if not port_open(target.host, jump=target.jump):
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
