"""Sockets the portal's process holds for students: a cap on the connections one address keeps
open to the pages (the gateway counts its own in access.Gateway), and a limit on open files high
enough that a class's terminals and tunnels never meet it."""

from __future__ import annotations

import asyncio
import resource

from swarmlab.classroom.limits import AddressLimits


def raise_open_files_limit() -> int:
    """The soft limit on open files raised to the hard one (Linux's default soft 1024 is a few
    dozen students' terminals, tunnels and node sessions); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        wanted = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


def peer_address(transport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


class CappedProtocol(asyncio.Protocol):
    """Stands in front of the pages' protocol for one connection: an address over its cap is
    cut off as soon as it connects; any other is handed on untouched."""

    def __init__(self, inner: asyncio.Protocol, limits: AddressLimits):
        self.inner, self.limits = inner, limits
        self.address: str | None = None  # counted

    def connection_made(self, transport) -> None:
        address = peer_address(transport)
        if not self.limits.connect(address):
            transport.abort()
            return
        self.address = address
        self.inner.connection_made(transport)

    def connection_lost(self, exc) -> None:
        if self.address is not None:
            self.limits.disconnect(self.address)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.address is not None:
            self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received() if self.address is not None else None

    def pause_writing(self) -> None:
        if self.address is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.address is not None:
            self.inner.resume_writing()


async def serve_capped(runner, sock, tls, limits: AddressLimits) -> asyncio.AbstractServer:
    """The pages on a listening socket, every connection through CappedProtocol."""
    server = runner.server
    handshake = {"ssl_handshake_timeout": 30} if tls is not None else {}
    return await asyncio.get_running_loop().create_server(lambda: CappedProtocol(server(), limits), sock=sock,
                                                          ssl=tls, **handshake)
