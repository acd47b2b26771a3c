"""A node's Docker Engine API over SSH: one channel to the engine's socket (or `docker system
dial-stdio` in an exec channel, what the docker CLI itself does for ssh:// hosts), with HTTP
keep-alive. The node is untrusted (a student is root there): every request has one deadline
for its whole reply and a size cap."""

from __future__ import annotations

import io
import socket
import threading
import time

import paramiko
from fabric import Connection

from swarmlab.adapters.remote import MOST_REPLY_BYTES, RemoteError, ReplyTooLarge
from swarmlab.adapters.ssh_streamlocal import open_socket_channel
from swarmlab.core.command import redact


DOCKER_SOCKET = "/var/run/docker.sock"


class EngineAPIBroken(RemoteError):
    """The API session itself failed (timeout, closed channel): open a new one to go on."""


class _Reply(io.RawIOBase):
    """What http.client reads of one reply: each read waits only for what is left of the
    request's deadline, and the reply stops at the size cap."""

    def __init__(self, socket_: "_BoundedSocket"):
        self.socket = socket_

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        s = self.socket
        left = s.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("no whole reply within the request's deadline")
        if s.left <= 0:
            raise ReplyTooLarge(f"a reply of more than {s.most_bytes >> 10} KiB")
        s.channel.settimeout(left)
        data = s.channel.recv(min(len(buffer), s.left))
        s.left -= len(data)
        buffer[:len(data)] = data
        return len(data)


class _BoundedSocket:
    """The channel as http.client's socket, with a deadline and a size cap per request."""

    def __init__(self, channel, most_bytes: int):
        self.channel, self.most_bytes = channel, most_bytes
        self.deadline, self.left = float("inf"), most_bytes

    def begin(self, seconds: float) -> None:
        self.deadline, self.left = time.monotonic() + seconds, self.most_bytes
        self.channel.settimeout(seconds)  # sending waits no longer either

    def sendall(self, data: bytes) -> None:
        self.channel.sendall(data)

    def makefile(self, mode: str = "rb", *args, **kwargs):
        return io.BufferedReader(_Reply(self))

    def close(self) -> None:
        self.channel.close()


class EngineAPI:
    """The node's Docker Engine API through one SSH channel to the engine's socket, with HTTP
    keep-alive; where sshd refuses that channel, through `docker system dial-stdio` in an exec
    channel (what the docker CLI itself does for ssh:// hosts), whose start took 0.8-1 s of
    emulated CPU, as each CLI call costs ~0.6 s under TCG. Also for
    what the CLI cannot take, such as a whole service spec. The node is untrusted: each request
    has one deadline for its whole reply, however slowly it drips, and a size cap."""

    def __init__(self, conn: Connection, timeout: float = 60, most_bytes: int = MOST_REPLY_BYTES):
        import http.client
        self.host = conn.host
        self.timeout = timeout
        try:
            transport = conn.client.get_transport()
            try:  # sshd connects to the engine's socket itself: no process starts in the guest
                self.channel = open_socket_channel(transport, DOCKER_SOCKET, timeout)
            except (AttributeError, paramiko.SSHException):
                self.channel = transport.open_session(timeout=timeout)
                self.channel.exec_command("docker system dial-stdio")
            self.channel.settimeout(timeout)
        except (OSError, AttributeError, paramiko.SSHException) as e:  # AttributeError: no transport any more
            raise EngineAPIBroken(f"{self.host}: no Docker API session: {type(e).__name__}") from None
        self.socket = _BoundedSocket(self.channel, most_bytes)
        self.http = http.client.HTTPConnection("docker", timeout=timeout)
        self.http.sock = self.socket  # http.client only needs sendall() and makefile()

    def __enter__(self) -> "EngineAPI":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def set_timeout(self, seconds: float) -> None:
        """For each later request: a whole reply slower than this breaks the session."""
        self.timeout = seconds

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        """(HTTP status, decoded JSON or text)."""
        import http.client
        import json
        self.socket.begin(self.timeout)
        try:
            self.http.request(method, path, body=None if body is None else json.dumps(body),
                              headers={"Content-Type": "application/json", "Host": "docker"})
            response = self.http.getresponse()
            data = response.read().decode(errors="replace")
        except ReplyTooLarge as e:
            raise EngineAPIBroken(f"{self.host}: Docker API {method} {path}: {e}: stopped reading") from None
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
