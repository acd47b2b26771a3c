#!/usr/bin/env python3
"""Benchmark: what one flooding student costs the portal process, and whether the others notice.

The portal (its pages and the SSH gateway, as `swarmlab portal` runs them) runs in a process of
its own, with a class of two (ann, bo) whose nodes are stand-ins on loopback that never read:
a TCP server on 127.0.0.2:22 for the gateway, an SSH server on 127.0.0.2:22 for the terminals.
Ann floods: N channels through the gateway, then one terminal with keystrokes. Printed: the
bytes each flood got in before it had to wait, the portal's RSS before and after, and Bo's page
latency meanwhile. Asserts nothing. Run as root (the stand-ins listen on port 22):
    .venv/bin/python bench/bench_portal_flood.py [--channels 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab.classroom import access, room as classroom
from swarmlab import config as configuration
from swarmlab.lab import model as labs
from swarmlab.core import roster  # noqa: E402

NODE = "127.0.0.2"
PORTAL = """
import asyncio, sys
import asyncssh
from aiohttp import web
from swarmlab import config as c
from swarmlab.classroom import access
from swarmlab.lab import model as labs
from swarmlab.classroom.portal import Portal
cfg = c.load(sys.argv[1])

class Node(asyncssh.SSHServer):  # a node's sshd that takes the student and never reads
    def begin_auth(self, username): return True
    def public_key_auth_supported(self): return True
    def validate_public_key(self, username, key): return True

async def main():
    held = []
    async def nothing(reader, writer): held.append(writer)
    key = asyncssh.generate_private_key("ssh-ed25519")
    labs.known_hosts(cfg, "ann").write_text(f"127.0.0.2 {key.export_public_key().decode()}")
    mode = sys.argv[2]
    if mode == "gateway":
        await asyncio.start_server(nothing, "127.0.0.2", 22)
    else:
        await asyncssh.create_server(Node, "127.0.0.2", 22, server_host_keys=[key], line_editor=False,
                                     process_factory=lambda p: asyncio.sleep(3600))
    pages = Portal(cfg)
    await access.start_gateway(cfg, pages.class_labs, pages.limits, "127.0.0.1", int(sys.argv[3]))
    runner = web.AppRunner(pages.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[4])).start()
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def a_class(directory: Path) -> tuple[Path, configuration.Config]:
    path = directory / "swarmlab.toml"
    path.write_text(f'[host]\nstate_dir = "{directory / "state"}"\n')
    config = configuration.load(path)
    classroom.save(config, classroom.Classroom(1, [roster.Student("Ann", "ann"), roster.Student("Bo", "bo")]))
    for lab, ip in (("ann", NODE), ("bo", "127.0.0.3")):
        labs.save_journal(config, labs.Lab(lab, [labs.Node("swr1", f"{lab}-swr1", "v", "52:54:00:00:00:01", ip,
                                                           f"swr1.{lab}.lab.swarmlab.test.")]))
        access.ensure_credentials(config, lab)
    return path, config


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def until_blocked(send, budget: int, stall: float = 1.0) -> int:
    sent = 0
    while sent < budget:
        try:
            sent += await asyncio.wait_for(send(), stall)
        except asyncio.TimeoutError:
            break
    return sent


async def page_latency(port: int, token: str, runs: int = 5) -> float:
    import aiohttp
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(runs):
            started = time.monotonic()
            async with session.get(f"http://127.0.0.1:{port}/s/{token}") as r:
                await r.read()
            times.append(time.monotonic() - started)
    return statistics.median(times)


async def flood_gateway(config, ssh_port: int, web_port: int, channels: int, pid: int) -> dict:
    import asyncssh
    key = asyncssh.read_private_key(str(access.credentials_dir(config, "ann") / "id_ed25519"))
    before = rss_mib(pid)
    async with asyncssh.connect("127.0.0.1", ssh_port, username="ann", client_keys=[key], known_hosts=None) as conn:
        got = []
        for _ in range(channels):
            _, writer = await conn.open_connection(NODE, 22, encoding=None)

            async def send(w=writer):
                w.write(b"x" * 65536)
                await w.drain()
                return 65536
            got.append(await until_blocked(send, 256 << 20))
        latency = await page_latency(web_port, access.token(config, "bo"))
        return {"channels": channels, "mib_in_per_channel": round(statistics.median(got) / 2**20, 1),
                "rss_before_mib": round(before), "rss_after_mib": round(rss_mib(pid)),
                "other_page_s": round(latency, 3)}


async def flood_terminal(config, web_port: int, pid: int) -> dict:
    import aiohttp
    before = rss_mib(pid)
    message = json.dumps({"type": "input", "data": "x" * 60000})
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"http://127.0.0.1:{web_port}/s/{access.token(config, 'ann')}/term/swr1")

        async def send():
            await ws.send_str(message)
            return len(message)
        sent = await until_blocked(send, 256 << 20)
        latency = await page_latency(web_port, access.token(config, "bo"))
        return {"mib_in": round(sent / 2**20, 1), "rss_before_mib": round(before), "rss_after_mib": round(rss_mib(pid)),
                "other_page_s": round(latency, 3)}


def run(mode: str, config_path: Path, work) -> dict:
    ssh_port, web_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-c", PORTAL, str(config_path), mode, str(ssh_port), str(web_port)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            sys.exit(f"the portal did not start ({mode})")
        return asyncio.run(work(ssh_port, web_port, proc.pid))
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=12, help="channels Ann floods at once (the default cap)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path, config = a_class(Path(tmp))
        results = {}
        for channels in sorted({1, args.channels}):
            results[f"gateway_{channels}"] = run("gateway", path, lambda s, w, pid, n=channels:
                                                 flood_gateway(config, s, w, n, pid))
        results["terminal"] = run("terminal", path, lambda s, w, pid: flood_terminal(config, w, pid))
    for name, r in results.items():
        print(f"{name:<12} " + ", ".join(f"{k} {v}" for k, v in r.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
