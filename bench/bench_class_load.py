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
The instructor's status page is read every 5 s meanwhile, and the first student's history every
15 s. With --hostile, a second phase of the same length has the first student do everything at
once: `yes` in a terminal, terminals and gateway channels up to the caps, Check again and again,
every vCPU of their nodes spinning, a terminal whose browser never reads, their disks filling and
their history file poisoned (class_load_hostile.py); the others' latencies are compared, and the
hostile lab's share of the host's CPUs is measured.

Prints figures and the issue's targets beside them, then a last JSON line (students, minutes,
errors, echo_p99_ratio, check_p99_s, check_alone_s, status_p99_s, portal_rss_mib and with
--hostile others_p99_change and hostile_cpu_share); asserts nothing. Run as root with the lab host up and the
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

import class_load_hostile as hostile_acts  # noqa: E402
from class_load_report import report  # noqa: E402
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
        """The status every 5 s; every third time, also the first student's history (read from
        their nodes, which the hostile phase poisons)."""
        n = 0
        while not self.stop.is_set():
            n += 1
            reads = [("instructor status", "status")]
            if n % 3 == 0:
                reads.append(("instructor history", f"history/{self.cards[0]['lab']}"))
            for kind, path in reads:
                began = time.monotonic()
                try:
                    async with http.get(f"{url}/i/{self.instructor}/{path}", ssl=NO_VERIFY) as r:
                        await r.json(content_type=None) if r.status == 200 else await r.read()
                        if r.status == 200:
                            self.record(kind, time.monotonic() - began)
                        else:
                            self.errors[f"{kind}: HTTP {r.status}"] += 1
                except (aiohttp.ClientError, OSError, ValueError) as e:
                    self.errors[f"{kind}: {type(e).__name__}"] += 1
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
        await hostile_acts.attack_nodes(self.config, card, int(self.args.minutes * 60), self.errors)
        stuck = asyncio.ensure_future(hostile_acts.stuck_terminal(http, url, NO_VERIFY, self.stop))
        try:
            await self.checking(http, card, hostile=True)
        finally:
            await stuck
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


async def checks_alone(cards: list[dict]) -> tuple[float | None, float | None]:
    """The exercise's own check time, nothing else running: one Check after another through the
    portal, one lab at a time, then again once the rate limit allows (the portal keeps each
    lab's sessions between Checks). The medians of the first and of the second, in seconds."""
    took: dict[int, list[float]] = {0: [], 1: []}
    async with aiohttp.ClientSession() as http:
        for round_ in (0, 1):
            began_round = time.monotonic()
            for card in cards:
                began = time.monotonic()
                async with http.post(card["portal"] + "/check", ssl=NO_VERIFY) as r:
                    await r.read()
                    if r.status == 200:
                        took[round_].append(time.monotonic() - began)
            if round_ == 0:
                await asyncio.sleep(max(0.0, 11 - (time.monotonic() - began_round)))  # the portal's CHECK_EVERY

    def median(values: list[float]) -> float | None:
        return round(statistics.median(values), 1) if values else None
    return median(took[0]), median(took[1])


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
        first, alone = asyncio.run(checks_alone(cards[:3]))
        cpu0, rss0 = proc_cpu_rss(portal.pid)
        load: list[float] = []
        phases = [("calm", False)] + ([("hostile", True)] if args.hostile else [])
        figures: dict = {"students": args.students, "nodes": args.nodes, "minutes": args.minutes,
                         "class_up_s": round(up_seconds, 1), "check_alone_s": alone,
                         "check_first_s": first}
        for name, hostile in phases:
            started = time.monotonic()
            cpu_before = proc_cpu_rss(portal.pid)[0]
            lab_cpu_before = hostile_acts.lab_cpu_seconds(config, cards[0]["lab"])

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
            # the first student's lab's share of the host's CPUs over the phase
            used = hostile_acts.lab_cpu_seconds(config, cards[0]["lab"]) - lab_cpu_before
            figures[name]["first_lab_cpu_share"] = round(used / ((time.monotonic() - started) * os.cpu_count()), 3)
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


if __name__ == "__main__":
    main()
