"""`swarmlab portal` as a process: the listening sockets, TLS, and the gateway and the pages on
one asyncio loop.

The sockets are bound before the process enters the isolated lab host's namespace: a socket
keeps the namespace it was made in, so students reach the portal on the machine's own network
while everything else the process opens (SSH to the nodes, libvirt) is inside the namespace."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable

from swarmlab.classroom import access, connection_caps, cpu_share, portal_endpoint
from swarmlab.classroom.limits import AddressLimits
from swarmlab.classroom.portal import Portal
from swarmlab.config import Config, ConfigError
from swarmlab.errors import Refused


def listen_socket(address: str, port: int) -> socket.socket:
    """A listening TCP socket in the namespace this process is in now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise Refused(f"cannot listen on {address}:{port}: {e.strerror or e}; pick another --listen, --port "
                      "or --ssh-port") from None
    sock.setblocking(False)
    return sock


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        tls.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"--cert {cert} / --key {key}: cannot use them ({e})") from None
    return tls


def serve(config: Config, web_sock: socket.socket, ssh_sock: socket.socket, tls: ssl.SSLContext,
          endpoint: portal_endpoint.Endpoint, progress: Callable[[str], None]) -> None:
    """Runs the gateway and the pages until Ctrl-C or SIGTERM; the endpoint is on record
    meanwhile, for `class cards`."""
    from aiohttp import web
    pages = Portal(config)
    limits = pages.state.limits  # one count per student for terminals and gateway channels alike

    async def run() -> None:
        gateway = await access.start_gateway(config, pages.state.class_labs, limits, sock=ssh_sock,
                                             addresses=AddressLimits(config))
        # A stop ends open terminals at once: aiohttp would wait up to 60 s for their handlers.
        runner = web.AppRunner(pages.app(), access_log=None, shutdown_timeout=3)
        await runner.setup()
        site = await connection_caps.serve_capped(runner, web_sock, tls, pages.state.addresses)
        loop = asyncio.get_running_loop()
        loop.create_task(pages.watch_class())
        governor = cpu_share.CpuGovernor(config)
        loop.create_task(cpu_share.govern(governor))
        for signum in (signal.SIGTERM, signal.SIGINT):  # a clean stop: the endpoint record goes
            loop.add_signal_handler(signum, access.stop_gateway, gateway)
        portal_endpoint.record(config, endpoint)
        progress(f"SSH gateway on {endpoint.listen}:{endpoint.ssh_port}, portal on {endpoint.listen}:"
                 f"{endpoint.https_port}, for {len(pages.state.class_labs())} students at {endpoint.url} "
                 "(`swarmlab class cards` hands out their pages); Ctrl-C stops both")
        progress(f"certificate SHA-256 {endpoint.fingerprint}")
        progress(f"instructor: {endpoint.url}/i/{access.instructor_token(config)}")
        try:
            await gateway.wait_closed()
        finally:
            site.close()
            await runner.cleanup()
            await asyncio.to_thread(governor.give_back)
    endpoint.pid = os.getpid()
    connection_caps.raise_open_files_limit()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run())
    except KeyboardInterrupt:  # before the handlers are in place
        pass
    finally:
        portal_endpoint.forget(config)
        close_without_waiting(loop)


def close_without_waiting(loop: asyncio.AbstractEventLoop) -> None:
    """Ends the portal without waiting for readings still running in threads: an SSH connect
    to a node that `class down` is removing blocks for its whole timeout, and asyncio.run and
    the interpreter would both wait for it. Everything the portal keeps is on disk already."""
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.close()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
