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
import threading
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


class EngineAPIBroken(RemoteError):
    """The API session itself failed (timeout, closed channel): open a new one to go on."""


class EngineAPI:
    """The node's Docker Engine API over `docker system dial-stdio` in one SSH exec channel
    (what the docker CLI itself does for ssh:// hosts), with HTTP keep-alive: one docker
    process for any number of requests, where each CLI call costs ~0.6 s under TCG. Also for
    what the CLI cannot take, such as a whole service spec."""

    def __init__(self, conn: Connection, timeout: float = 60):
        import http.client
        self.host = conn.host
        try:
            self.channel = conn.client.get_transport().open_session(timeout=timeout)
            self.channel.settimeout(timeout)
            self.channel.exec_command("docker system dial-stdio")
        except (OSError, AttributeError, paramiko.SSHException) as e:  # AttributeError: no transport any more
            raise EngineAPIBroken(f"{self.host}: no Docker API session: {type(e).__name__}") from None
        self.http = http.client.HTTPConnection("docker", timeout=timeout)
        self.http.sock = self.channel  # http.client only needs sendall() and makefile()

    def __enter__(self) -> "EngineAPI":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def set_timeout(self, seconds: float) -> None:
        """For each later read: a reply slower than this breaks the session."""
        self.channel.settimeout(seconds)

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
            raise EngineAPIBroken(f"{self.host}: Docker API {method} {path} failed: {type(e).__name__}") from None
        try:
            return response.status, json.loads(data) if data.strip() else None
        except ValueError:
            return response.status, data

    def get(self, path: str):
        return self.request("GET", path)

    def request(self, method: str, path: str, body: dict | None = None):
        """The decoded answer; an error status raises, with the engine's message (redacted: a
        body may hold a secret, and an engine may echo it)."""
        status, answer = self.call(method, path, body)
        if status >= 300:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise RemoteError(redact(f"{self.host}: Docker API {method} {path}: {status} {message}"))
        return answer


class KeptEngineAPI:
    """One node's Engine API session for many reads: opened on first use, closed when it
    breaks (a timeout, a closed channel) and opened again by the next read. An error the
    engine answers with (a follower's 503 while a manager joins or an election runs) keeps it."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.host = conn.host
        self.api: EngineAPI | None = None
        self.turn = threading.Lock()  # threads share a session one request at a time

    def get(self, path: str, timeout: float):
        return self.request("GET", path, timeout=timeout)

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 60):
        with self.turn:
            try:
                if self.api is None:
                    self.api = EngineAPI(self.conn, timeout=timeout)
                self.api.set_timeout(timeout)
                return self.api.request(method, path, body)
            except EngineAPIBroken:
                self._drop()
                raise

    def close(self) -> None:
        with self.turn:
            self._drop()

    def _drop(self) -> None:
        if self.api is not None:
            self.api.close()
            self.api = None


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
