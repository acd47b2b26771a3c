#!/usr/bin/env python3
"""Benchmark: a class under load, driven through the doors its students use.

Makes a class (`class up`), starts an exercise for everyone and runs `swarmlab portal`. Then
every simulated student, for --minutes:
- types a marked command into a portal terminal on each node every few seconds and times the
  marker's echo; the same over a direct SSH session to the same node as `student` (the ratio
  is the portal's cost, whatever the machine's speed), and over the SSH gateway with the
  student's card folder for every other student;
- presses Check as often as the portal allows (it answers 429 with Retry-After in between) and
  Hint now and then.
The instructor's status page is read every 5 s meanwhile. With --hostile, a second phase of the
same length has the first student flood: `yes` in a terminal, terminals and gateway channels up
to the caps, and Check at once again and again; the others' latencies are compared.

Prints figures and the issue's targets beside them, then a last JSON line (students, minutes,
errors, echo_p99_ratio, check_p99_s, check_alone_s, status_p99_s, portal_rss_mib and with
--hostile others_p99_change); asserts nothing. Run as root with the lab host up and the
template built, and no class (the bench makes its own and removes it):
    .venv/bin/python bench/bench_class_load.py [--students N] [--nodes 2] [--minutes 2] [--hostile]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from swarmlab import config as configuration  # noqa: E402
from swarmlab.classroom import access  # noqa: E402
from swarmlab.host import hoststate  # noqa: E402

from class_load_shells import PortalTerminal, ProcessShell, Shell, last_line, summary  # noqa: E402

NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname, NO_VERIFY.verify_mode = False, ssl.CERT_NONE  # the portal's self-signed certificate


def cli(*args: str, check: bool = True, timeout: float = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["?"]
        sys.exit(f"swarmlab {' '.join(args)} failed: {said[-1]}")
    return proc


class Room:
    """What every student does, and what is measured."""

    def __init__(self, config, cards: list[dict], folders: Path, args, instructor: str):
        self.config, self.cards, self.folders, self.args = config, cards, folders, args
        self.instructor = instructor
        self.latency: dict[str, dict[str, list[float]]] = {}  # phase -> kind -> seconds
        self.errors: Counter = Counter()
        self.phase = "calm"
        self.stop = asyncio.Event()

    def record(self, kind: str, seconds: float | None, student: str = "") -> None:
        if seconds is None:
            self.errors[f"{kind}: no echo within 30 s"] += 1
            return
        bucket = self.latency.setdefault(self.phase, {})
        bucket.setdefault(kind, []).append(seconds)
        if student and student != self.cards[0]["lab"]:
            bucket.setdefault(f"{kind} (others)", []).append(seconds)

    async def typing(self, shell: Shell, kind: str, lab: str, pump) -> None:
        reader = asyncio.ensure_future(pump())
        try:
            if not await shell.wait_for("$ ", 60):
                self.errors[f"{kind}: no shell prompt in 60 s, last shown {last_line(shell.seen)!r}"] += 1
                return
            n = 0
            while not self.stop.is_set():
                n += 1
                self.record(kind, await shell.echo(f"mk{lab}{kind[:1]}{n}x"), lab)
                await self.pause(self.args.type_every)
        finally:
            reader.cancel()

    async def pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stop.wait(), seconds * random.uniform(0.7, 1.3))
        except asyncio.TimeoutError:
            pass

    async def portal_terminal(self, http: aiohttp.ClientSession, card: dict, node: str) -> None:
        url = card["portal"].replace("https://", "wss://") + f"/term/{node}"
        shell = None
        try:
            async with http.ws_connect(url, ssl=NO_VERIFY, max_msg_size=0) as ws:
                shell = PortalTerminal(ws)
                await self.typing(shell, "portal", card["lab"], shell.pump)
        except (aiohttp.ClientError, OSError) as e:
            shown = f", last shown {last_line(shell.seen)!r}" if shell else ""
            self.errors[f"portal terminal: {type(e).__name__}{shown}"] += 1

    async def direct_ssh(self, card: dict, node: dict) -> None:
        try:
            conn = await access.connect_as_student(self.config, card["lab"], node["ip"])
        except Exception as e:  # asyncssh's errors
            self.errors[f"direct ssh: {type(e).__name__}"] += 1
            return
        try:
            process = await conn.create_process(term_type="xterm", term_size=(100, 30), encoding=None)
            shell = ProcessShell(process.stdin, process.stdout)
            await self.typing(shell, "direct", card["lab"], shell.pump)
        finally:
            conn.close()

    async def gateway_ssh(self, card: dict, node: str) -> None:
        folder = self.folders / card["folder"]
        proc = await asyncio.create_subprocess_exec(
            "ssh", "-F", "ssh_config", "-tt", "-o", "BatchMode=yes", node, cwd=folder,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        shell = ProcessShell(proc.stdin, proc.stdout)
        try:
            await self.typing(shell, "gateway", card["lab"], shell.pump)
        finally:
            proc.kill()
            await proc.wait()

    async def checking(self, http: aiohttp.ClientSession, card: dict, hostile: bool = False) -> None:
        hints = 0
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                async with http.post(card["portal"] + "/check", ssl=NO_VERIFY) as r:
                    await r.read()
                    if r.status == 429:
                        wait = float(r.headers.get("Retry-After", "1"))
                        await self.pause(0.2 if hostile else max(1.0, wait))
                        continue
                    if r.status == 200:
                        self.record("check", time.monotonic() - began, card["lab"])
                    else:
                        self.errors[f"check: HTTP {r.status}"] += 1
            except (aiohttp.ClientError, OSError) as e:
                self.errors[f"check: {type(e).__name__}"] += 1
            if random.random() < 0.3 and not hostile:
                hints += 1
                async with http.post(card["portal"] + "/hint", ssl=NO_VERIFY) as r:
                    await r.read()
                    if r.status not in (200, 429):
                        self.errors[f"hint: HTTP {r.status}"] += 1
            await self.pause(0.2 if hostile else self.args.check_every)

    async def instructor_page(self, http: aiohttp.ClientSession, url: str) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                async with http.get(f"{url}/i/{self.instructor}/status", ssl=NO_VERIFY) as r:
                    await r.read()
                    if r.status == 200:
                        self.record("instructor status", time.monotonic() - began)
                    else:
                        self.errors[f"instructor status: HTTP {r.status}"] += 1
            except (aiohttp.ClientError, OSError) as e:
                self.errors[f"instructor status: {type(e).__name__}"] += 1
            await self.pause(5)

    async def hostile(self, http: aiohttp.ClientSession, card: dict) -> None:
        """The first student: output flood in one terminal, terminals and gateway channels up to
        the caps, and Check pressed again and again."""
        url = card["portal"].replace("https://", "wss://") + f"/term/{card['nodes'][0]['node']}"
        held, procs = [], []
        try:
            flood = await http.ws_connect(url, ssl=NO_VERIFY, max_msg_size=0)
            held.append(flood)
            await flood.send_str(json.dumps({"type": "input", "data": "yes swarmlab-flood\r"}))
            for _ in range(self.config.max_terminals + 2):
                held.append(await http.ws_connect(url, ssl=NO_VERIFY, max_msg_size=0))
        except (aiohttp.ClientError, OSError):
            pass  # the cap said no, as it should
        for _ in range(self.config.max_channels + 2):
            procs.append(await asyncio.create_subprocess_exec(
                "ssh", "-F", "ssh_config", "-N", "-o", "BatchMode=yes", card["nodes"][0]["node"],
                cwd=self.folders / card["folder"], stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
        try:
            await self.checking(http, card, hostile=True)
        finally:
            for ws in held:
                await ws.close()
            for proc in procs:
                proc.kill()
                await proc.wait()


def proc_cpu_rss(pid: int) -> tuple[float, int]:
    """(CPU seconds used, RSS in MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return cpu, rss // 1024


async def after(seconds: float, job):
    await asyncio.sleep(seconds)
    return await job


async def phase(room: Room, name: str, seconds: float, portal_url: str, hostile: bool) -> None:
    room.phase, room.stop = name, asyncio.Event()
    async with aiohttp.ClientSession() as http:
        jobs = [room.instructor_page(http, portal_url)]
        for i, card in enumerate(room.cards):
            if hostile and i == 0:
                jobs.append(room.hostile(http, card))
                continue
            mine = [room.checking(http, card)]
            for node in card["nodes"]:
                mine += [room.portal_terminal(http, card, node["node"]), room.direct_ssh(card, node)]
                if i % 2 == 1:
                    mine.append(room.gateway_ssh(card, node["node"]))
            arrives = random.uniform(0, room.args.arrive)  # a room does not press Enter in the same second
            jobs += [after(arrives, job) for job in mine]
        tasks = [asyncio.ensure_future(j) for j in jobs]
        await asyncio.sleep(seconds)
        room.stop.set()
        await asyncio.wait(tasks, timeout=60)
        for task in tasks:
            task.cancel()


async def checks_alone(cards: list[dict]) -> float | None:
    """The exercise's own check time: one Check after another through the portal, one lab at a
    time, nothing else running; the median, in seconds."""
    took = []
    async with aiohttp.ClientSession() as http:
        for card in cards:
            began = time.monotonic()
            async with http.post(card["portal"] + "/check", ssl=NO_VERIFY) as r:
                await r.read()
                if r.status == 200:
                    took.append(time.monotonic() - began)
    return round(statistics.median(took), 1) if took else None


def start_portal(directory: Path, port: int) -> tuple[subprocess.Popen, str]:
    log = directory / "portal.log"
    proc = subprocess.Popen([sys.executable, "-m", "swarmlab", "portal", "--listen", "127.0.0.1", "--address",
                             "127.0.0.1", "--port", str(port), "--ssh-port", str(port + 1)], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "SSH gateway on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"the portal did not start: {log.read_text()[-500:]}")
        time.sleep(0.2)
    return proc, f"https://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=None,
                        help="default: the largest class the lab hosts hold (`host ls`: free nodes / --nodes)")
    parser.add_argument("--nodes", type=int, default=2, help="nodes per lab (the services exercise needs 2)")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--type-every", type=float, default=3.0, help="seconds between a student's commands")
    parser.add_argument("--check-every", type=float, default=10.0, help="seconds between a student's Checks")
    parser.add_argument("--exercise", default="services")
    parser.add_argument("--port", type=int, default=18443)
    parser.add_argument("--hostile", action="store_true", help="add a phase with one flooding student")
    parser.add_argument("--keep", action="store_true", help="leave the class up afterwards")
    parser.add_argument("--arrive", type=float, default=10.0,
                        help="students arrive within this many seconds of each other, as a room does")
    args = parser.parse_args()
    config = configuration.load()
    hoststate.enter_host(config)  # the bench, its portal and its students all on the lab host's side
    if cli("class", "status", check=False).returncode != 3:
        sys.exit("a class exists already: `swarmlab class down --yes` first (the bench makes its own)")
    if args.students is None:
        rooms = json.loads(cli("host", "ls", "--json").stdout)
        args.students = sum(r["free_nodes"] for r in rooms if not r["problem"]) // args.nodes
        print(f"the largest class the lab hosts hold: {args.students} labs of {args.nodes} nodes", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-class-load-"))
    portal = None
    try:
        began = time.monotonic()
        cli("class", "up", "--students", str(args.students), "--nodes", str(args.nodes))
        up_seconds = time.monotonic() - began
        cli("class", "start", args.exercise)
        portal, url = start_portal(tmp, args.port)
        cards = json.loads(cli("class", "cards", "--json", "--out", str(tmp)).stdout)
        room = Room(config, cards, tmp, args, access.instructor_token(config))
        alone = asyncio.run(checks_alone(cards[:3]))
        cpu0, rss0 = proc_cpu_rss(portal.pid)
        load: list[float] = []
        phases = [("calm", False)] + ([("hostile", True)] if args.hostile else [])
        figures: dict = {"students": args.students, "nodes": args.nodes, "minutes": args.minutes,
                         "class_up_s": round(up_seconds, 1), "check_alone_s": alone}
        for name, hostile in phases:
            started = time.monotonic()
            cpu_before = proc_cpu_rss(portal.pid)[0]

            async def sample_load():
                while True:
                    load.append(float(Path("/proc/loadavg").read_text().split()[0]))
                    await asyncio.sleep(5)

            async def run():
                sampler = asyncio.ensure_future(sample_load())
                try:
                    await phase(room, name, args.minutes * 60, url, hostile)
                finally:
                    sampler.cancel()
            asyncio.run(run())
            cpu, rss = proc_cpu_rss(portal.pid)
            figures[name] = {kind: summary(values) for kind, values in sorted(room.latency.get(name, {}).items())}
            figures[name]["portal_cpu_percent"] = round(100 * (cpu - cpu_before) / (time.monotonic() - started), 1)
            figures[name]["portal_rss_mib"] = rss
        figures["portal_rss_mib_at_start"] = rss0
        figures["portal_cpu_s"] = round(proc_cpu_rss(portal.pid)[0] - cpu0, 1)
        figures["host_load_1min"] = {"median": statistics.median(load) if load else None,
                                     "max": max(load) if load else None}
        figures["errors_by_kind"] = dict(room.errors)
        figures["errors"] = sum(room.errors.values())
        report(figures)
    finally:
        if portal is not None:
            portal.send_signal(signal.SIGTERM)
            portal.wait(30)
        if not args.keep:
            cli("class", "down", "--yes", check=False)


def report(figures: dict) -> None:
    print(f"{figures['students']} students x {figures['nodes']} nodes (class up {figures['class_up_s']} s)")
    for name in ("calm", "hostile"):
        if name not in figures:
            continue
        f = figures[name]
        print(f"{name}: portal CPU {f['portal_cpu_percent']}%, RSS {f['portal_rss_mib']} MiB")
        for kind, s in f.items():
            if isinstance(s, dict):
                print(f"  {kind:28s} n={s['n']:4d}  p50 {s['p50']} ms  p95 {s['p95']} ms  p99 {s['p99']} ms")
        portal_p50, direct_p50 = f.get("portal", {}).get("p50"), f.get("direct", {}).get("p50")
        if portal_p50 and direct_p50:
            f["portal_over_direct_p50"] = round(portal_p50 / direct_p50, 2)
            print(f"  keystroke echo, portal / direct SSH (p50): {f['portal_over_direct_p50']}")
    if "hostile" in figures:
        calm, hostile = figures["calm"], figures["hostile"]
        for kind in ("portal (others)", "check (others)"):
            if calm.get(kind, {}).get("p99") and hostile.get(kind, {}).get("p99"):
                figures[f"hostile_moved_p99 {kind}"] = round(hostile[kind]["p99"] / calm[kind]["p99"], 2)
                print(f"  with a hostile student, the others' {kind} p99 moved x{figures[f'hostile_moved_p99 {kind}']}")
    print(f"host load (1 min): median {figures['host_load_1min']['median']}, max {figures['host_load_1min']['max']}")
    print("errors: " + (", ".join(f"{k} x{v}" for k, v in figures["errors_by_kind"].items()) or "none"))
    # the targets, read by scripts from the last line
    calm = figures["calm"]

    def ms(kind: str, f: dict = calm) -> float | None:
        return (f.get(kind) or {}).get("p99")
    figures["echo_p99_ratio"] = round(ms("portal") / ms("direct"), 2) if ms("portal") and ms("direct") else None
    figures["check_p99_s"] = round(ms("check") / 1000, 1) if ms("check") else None
    figures["status_p99_s"] = round(ms("instructor status") / 1000, 1) if ms("instructor status") else None
    figures["portal_rss_mib"] = max(figures[name]["portal_rss_mib"] for name in ("calm", "hostile") if name in figures)
    if "hostile" in figures and ms("portal (others)") and ms("portal (others)", figures["hostile"]):
        figures["others_p99_change"] = round(ms("portal (others)", figures["hostile"]) / ms("portal (others)") - 1, 2)
    print(f"echo p99 portal/direct {figures['echo_p99_ratio']} (target <= 1.5); check p99 {figures['check_p99_s']} s "
          f"(alone {figures['check_alone_s']} s; target <= alone + 1); status p99 {figures['status_p99_s']} s "
          f"(target <= 5); portal RSS {figures['portal_rss_mib']} MiB (target <= 300)"
          + (f"; others' echo p99 moved {figures['others_p99_change']:+.0%} (target <= +20%)"
             if "others_p99_change" in figures else ""))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
