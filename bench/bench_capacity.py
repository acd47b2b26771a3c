#!/usr/bin/env python3
"""Benchmark: how many labs one host holds, from what each node really takes.

Brings up labs of --nodes nodes one after another (`swarmlab up N --lab capNN`) until the host's
available memory would drop below --margin-mib after one more (or --labs are up). Then, once
same-page merging has settled, it reports per node:
- PSS of the nodes' qemu processes (shared pages split between their users, so KSM shows);
- the host's MemAvailable drop per node (page tables, libvirt and dnsmasq included);
- what KSM saves (its pages_sharing), and ksmd's CPU meanwhile;
- the guest's own view (`free`), to show what free page reporting hands back.
With --exercises, the first lab then runs `exercise test --all` and its nodes are measured
again.

--tb-curve 0,512,256,128 first measures TCG's translation cache, one lab at a time on the idle
host: for each size (0: QEMU's 1 GiB), `up N` and `exercise test services` are timed and the
nodes' PSS read, through a copy of swarmlab.toml with that `[nodes] tb_cache_mib`. QEMU fills
the cache before it flushes it, and never hands the pages back: a node holds its whole cache
sooner or later. --no-capacity stops after the curve.

The first `up` of the capacity run is timed on the idle host. `labs_per_24gib` is 90 % of
24 GiB over a lab's share by the largest per-node figure (PSS formed, the host's drop, PSS
after the exercises).

--class-up instead makes the largest class this host holds, as `host ls` counts its room, with
one `class up --students L` (labs one at a time per 4 CPUs, as [class] parallel says), prints
a line per lab (its seconds and how its nodes started) and measures the formed nodes as above;
`class down` removes it. --class-labs L makes a class of L labs instead.

--cpu (with --class-up) then leaves the formed class idle for --idle-s (300) and reports what
its nodes cost the host's CPU: each QEMU's share of a core, sampled every 10 s (mean per node,
p95 of every sample), the guests' load and the host's. The JSON line has idle_cpu_per_node (the
mean, % of a core), labs and class_up_s.

The settings measured are the ones in swarmlab.toml ([nodes] memory_mib, tb_cache_mib, the
template's balloon; KSM as `host up` set it); --ksm off stops and unmerges KSM first.

Prints figures; asserts nothing. Run as root with the lab host up and the template built:
    .venv/bin/python bench/bench_capacity.py [--nodes 3] [--labs 12] [--margin-mib 1536] [--exercises]
The last line is one JSON object. Everything the bench makes is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swarmlab import config as configuration  # noqa: E402
from swarmlab.adapters import ksm  # noqa: E402
from swarmlab.host import hoststate  # noqa: E402

import idle_cpu  # noqa: E402

HOST_SHARE = 0.9  # placement's share of a host's memory for nodes
MIB = 1 << 20


def cli(*args: str, check: bool = True, timeout: float = 3600, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "swarmlab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["?"]
        raise SystemExit(f"swarmlab {' '.join(args)} failed: {said[-1]}")
    return proc


def mem_available_mib() -> int:
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemAvailable:"))
    return int(line.split()[1]) // 1024


def qemu_pids(domains: list[str]) -> dict[str, int]:
    pids = {}
    for name in domains:
        try:
            pids[name] = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
        except (OSError, ValueError):
            pass
    return pids


def pss_mib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")) // 1024


def pss_parts_mib(pid: int, guest_mib: int) -> dict[str, int]:
    """A node's PSS split: guest memory (the mapping of its size), TCG's translation cache (the
    large executable mapping) and the rest (QEMU's own heap and libraries)."""
    parts = {"guest": 0, "tb_cache": 0, "rest": 0}
    kind = "rest"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            start, end = (int(x, 16) for x in head[0].split("-"))
            size_mib = (end - start) >> 20
            kind = ("guest" if size_mib == guest_mib and "x" not in head[1] else
                    "tb_cache" if "x" in head[1] and size_mib >= 64 else "rest")
        elif head[0] == "Pss:":
            parts[kind] += int(head[1])
    return {k: v // 1024 for k, v in parts.items()}


def ksmd_cpu_s() -> float:
    pid = subprocess.run(["pgrep", "-x", "ksmd"], capture_output=True, text=True).stdout.split()
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid[0]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle_ksm(most_s: float) -> float:
    """Waits until KSM's sharing grows by under 1 % in 30 s (or most_s); returns the wait."""
    began = time.monotonic()
    last = -1
    while time.monotonic() - began < most_s:
        now = int((ksm.SYSFS / "pages_sharing").read_text()) if ksm.available() else 0
        if last >= 0 and now - last <= max(256, last // 100):
            break
        last = now
        time.sleep(30)
    return round(time.monotonic() - began)


def guest_free(lab: str, node: str) -> dict:
    out = cli("ssh", "--lab", lab, node, "--", "free -m | awk '/^Mem:/{print $3, $6, $4}'", check=False).stdout.split()
    return dict(zip(("used", "cache", "free"), map(int, out))) if len(out) == 3 else {}


def measure(domains: list[str], avail_before: int, cpu_before: float, since: float, guest_mib: int) -> dict:
    pids = qemu_pids(domains)
    pss = [pss_mib(p) for p in pids.values()]
    parts = [pss_parts_mib(p, guest_mib) for p in pids.values()]
    saved = ksm.saved_mib() if ksm.available() else 0
    return {"nodes": len(pss), "pss_mib_per_node": round(sum(pss) / len(pss)) if pss else None,
            "pss_mib_max": max(pss, default=None),
            "pss_mib_parts": {k: round(sum(x[k] for x in parts) / len(parts)) for k in ("guest", "tb_cache", "rest")}
            if parts else None,
            "host_mib_per_node": round((avail_before - mem_available_mib()) / len(pss)) if pss else None,
            "ksm_saved_mib": saved, "ksm_saved_mib_per_node": round(saved / len(pss)) if pss else 0,
            "ksmd_cpu_percent": round(100 * (ksmd_cpu_s() - cpu_before) / max(1.0, time.monotonic() - since), 1)}


def config_with(tb_cache_mib: int, directory: Path) -> dict:
    """The environment for a swarmlab run with this translation cache size."""
    import tomlkit
    source = Path(os.environ.get("SWARMLAB_CONFIG", "/etc/swarmlab/swarmlab.toml"))
    doc = tomlkit.parse(source.read_text())
    doc.setdefault("nodes", tomlkit.table())["tb_cache_mib"] = tb_cache_mib
    path = directory / f"swarmlab-tb{tb_cache_mib}.toml"
    path.write_text(tomlkit.dumps(doc))
    return {**os.environ, "SWARMLAB_CONFIG": str(path)}


def tb_curve(sizes: list[int], nodes: int, prefix: str, guest_mib: int, directory: Path) -> list[dict]:
    points = []
    for size in sizes:
        env, lab = config_with(size, directory), f"tb{size}"
        try:
            began = time.monotonic()
            cli("up", str(nodes), "--lab", lab, "--json", env=env)
            up_s = time.monotonic() - began
            began = time.monotonic()
            passed = cli("exercise", "test", "services", "--lab", lab, env=env, check=False).returncode == 0
            exercise_s = time.monotonic() - began
            pids = qemu_pids([f"{lab}-{prefix}{i}" for i in range(1, nodes + 1)]).values()
            pss = [pss_mib(p) for p in pids]
            tb = [pss_parts_mib(p, guest_mib)["tb_cache"] for p in pids]
            point = {"tb_cache_mib": size or "QEMU's 1 GiB", "up_s": round(up_s, 1),
                     "services_test_s": round(exercise_s, 1), "passed": passed,
                     "pss_mib_per_node": round(sum(pss) / len(pss)) if pss else None,
                     "tb_cache_pss_mib": round(sum(tb) / len(tb)) if tb else None}
        finally:
            cli("down", "--lab", lab, "--yes", check=False, env=env)
        print(f"translation cache {point['tb_cache_mib']}: up {point['up_s']} s, exercise test services "
              f"{point['services_test_s']} s ({'passed' if passed else 'FAILED'}), PSS {point['pss_mib_per_node']} "
              f"MiB a node, of it translation cache {point['tb_cache_pss_mib']} MiB", flush=True)
        points.append(point)
    return points


def guest_loads(labs: list[str], nodes: int, prefix: str) -> list[float]:
    """Each node's own 5-minute load average."""
    loads = []
    for lab in labs:
        for i in range(1, nodes + 1):
            out = cli("ssh", "--lab", lab, f"{prefix}{i}", "--", "cat /proc/loadavg", check=False).stdout.split()
            if len(out) >= 2:
                loads.append(float(out[1]))
    return loads


def class_up_largest(nodes: int, settle: float, guest_mib: int, prefix: str, labs: int = 0,
                     idle_s: float = 0) -> dict:
    """`class up` of as many labs as `host ls` has room for (or `labs`); a line per lab, then the
    nodes' figures, and with idle_s what they cost the CPU while left idle that long."""
    room = json.loads(cli("host", "ls", "--json").stdout)
    labs = labs or sum(h["free_nodes"] for h in room if not h["problem"]) // nodes
    avail0, cpu0 = mem_available_mib(), ksmd_cpu_s()
    print(f"class up of {labs} labs of {nodes} nodes, the largest class `host ls` has room for", flush=True)
    began = time.monotonic()
    try:
        made = cli("class", "up", "--students", str(labs), "--nodes", str(nodes), "--json", check=False,
                   timeout=4 * 3600)
        took = time.monotonic() - began
        results = json.loads(made.stdout or "[]")
        for r in results:
            starts = [n.get("start") for n in r.get("detail", {}).get("nodes", [])]
            print(f"  {r['lab']}: {'ok' if r['ok'] else 'FAILED: ' + str(r.get('error'))} in {r['seconds']:.0f} s "
                  f"({', '.join(starts) or '-'})", flush=True)
        domains = [f"{r['lab']}-{prefix}{i}" for r in results for i in range(1, nodes + 1)]
        settle_ksm(settle)
        formed = measure(domains, avail0, cpu0, began, guest_mib)
        load = os.getloadavg()[0]
        idle = None
        if idle_s:
            print(f"leaving the class idle for {idle_s:.0f} s", flush=True)
            idle = idle_cpu.sample(domains, idle_s, progress=lambda line: print(line, flush=True))
            loads = guest_loads([r["lab"] for r in results], nodes, prefix)
            idle["guest_load_5min_mean"] = round(sum(loads) / len(loads), 2) if loads else None
            print(f"idle: {idle['mean_percent']} % of a core per node (p95 {idle['p95_percent']} %), guest load "
                  f"{idle['guest_load_5min_mean']}, host load {idle['host_load']}", flush=True)
    finally:
        cli("class", "down", "--yes", check=False, timeout=3600)
    figure = {"labs": labs, "ok": sum(r["ok"] for r in results), "class_up_s": round(took),
              "per_lab_s": [r["seconds"] for r in results], "formed": formed, "load_1min": round(load, 1),
              "idle": idle}
    print(f"class up of {labs} labs: {figure['ok']} ok in {took:.0f} s; per formed node PSS "
          f"{formed['pss_mib_per_node']} MiB, host {formed['host_mib_per_node']} MiB; load {load:.1f}", flush=True)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="nodes per lab")
    parser.add_argument("--labs", type=int, default=16, help="at most this many labs")
    parser.add_argument("--margin-mib", type=int, default=1536,
                        help="stop when one more lab would leave less available memory than this")
    parser.add_argument("--settle", type=float, default=300, help="longest wait for KSM to settle, in seconds")
    parser.add_argument("--exercises", action="store_true", help="run every exercise on the first lab, then measure")
    parser.add_argument("--ksm", choices=("as-set", "off"), default="as-set")
    parser.add_argument("--tb-curve", default="", metavar="MIB,MIB", help="translation cache sizes to measure first")
    parser.add_argument("--no-capacity", action="store_true", help="stop after the translation cache curve")
    parser.add_argument("--class-up", action="store_true", help="class up of the largest class the host holds")
    parser.add_argument("--class-labs", type=int, default=0, help="with --class-up: this many labs instead")
    parser.add_argument("--cpu", action="store_true", help="with --class-up: the formed class's idle CPU cost")
    parser.add_argument("--idle-s", type=float, default=300, help="with --cpu: how long the class is left idle")
    args = parser.parse_args()
    config = configuration.load()
    hoststate.enter_host(config)
    if args.class_up:
        figure = class_up_largest(args.nodes, args.settle, config.memory_mib, config.prefix, args.class_labs,
                                  args.idle_s if args.cpu else 0)
        print(json.dumps({"largest_class_labs": figure["labs"], "class_up_s": figure["class_up_s"],
                          "node_pss_mib_formed": figure["formed"]["pss_mib_per_node"],
                          **({"idle_cpu_per_node": figure["idle"]["mean_percent"]} if figure["idle"] else {}),
                          **figure}))
        return
    if args.tb_curve:
        import tempfile
        with tempfile.TemporaryDirectory(prefix="bench-capacity-") as directory:
            curve = tb_curve([int(s) for s in args.tb_curve.split(",")], args.nodes, config.prefix, config.memory_mib,
                             Path(directory))
        if args.no_capacity:
            print(json.dumps({"tb_curve": curve}))
            return
    ksm_before = ksm.settings() if ksm.available() else None
    if args.ksm == "off" and ksm_before:
        ksm.apply({"run": 2})  # stop and unmerge
    labs: list[str] = []
    figures: dict = {"nodes_per_lab": args.nodes, "memory_mib": config.memory_mib,
                     "tb_cache_mib": config.tb_cache_mib or "QEMU's default",
                     "ksm": ksm.settings() if ksm.available() else None}
    try:
        avail0, cpu0, t0 = mem_available_mib(), ksmd_cpu_s(), time.monotonic()
        figures["available_mib_at_start"] = avail0
        per_lab = None
        while len(labs) < args.labs:
            avail = mem_available_mib()
            if per_lab is not None and avail - per_lab < args.margin_mib:
                print(f"stopping: {avail} MiB available, one more lab takes ~{per_lab} MiB", flush=True)
                break
            lab = f"cap{len(labs) + 1:02d}"
            labs.append(lab)
            began = time.monotonic()
            up = json.loads(cli("up", str(args.nodes), "--lab", lab, "--json").stdout)
            seconds = time.monotonic() - began
            if len(labs) == 1:
                figures["up_s"] = round(seconds, 1)
                figures["up_starts"] = [n.get("start") for n in up.get("nodes", [])]
            per_lab = avail - mem_available_mib()
            print(f"{lab}: up {args.nodes} in {seconds:.0f} s; took {per_lab} MiB now "
                  f"({mem_available_mib()} MiB available)", flush=True)
        domains = [f"{lab}-{config.prefix}{i}" for lab in labs for i in range(1, args.nodes + 1)]
        figures["labs"] = len(labs)
        figures["ksm_settle_s"] = settle_ksm(args.settle)
        figures["formed"] = measure(domains, avail0, cpu0, t0, config.memory_mib)
        figures["guest_view"] = guest_free(labs[0], f"{config.prefix}1")
        print(f"formed, {len(domains)} nodes: {figures['formed']}; the guest's own view (MiB): "
              f"{figures['guest_view']}", flush=True)
        if args.exercises:
            began = time.monotonic()
            tested = cli("exercise", "test", "--all", "--lab", labs[0], "--json", timeout=7200, check=False)
            figures["exercises_s"] = round(time.monotonic() - began)
            figures["exercises_passed"] = tested.returncode == 0
            if tested.returncode != 0:
                print(f"exercise test --all FAILED on {labs[0]}:\n{tested.stdout[-2000:]}{tested.stderr[-500:]}",
                      flush=True)
            settle_ksm(args.settle)
            first = [d for d in domains if d.startswith(f"{labs[0]}-")]
            pss = [pss_mib(p) for p in qemu_pids(first).values()]
            parts = [pss_parts_mib(p, config.memory_mib) for p in qemu_pids(first).values()]
            figures["after_exercises"] = {"pss_mib_per_node": round(sum(pss) / len(pss)), "pss_mib_max": max(pss),
                                          "pss_mib_parts": {k: round(sum(x[k] for x in parts) / len(parts))
                                                            for k in ("guest", "tb_cache", "rest")}}
            print(f"after every exercise on {labs[0]}: {figures['after_exercises']}", flush=True)
        node_mib = max(figures["formed"]["host_mib_per_node"], figures["formed"]["pss_mib_per_node"],
                       figures.get("after_exercises", {}).get("pss_mib_per_node", 0))
        figures["labs_per_24gib"] = int(24 * 1024 * HOST_SHARE // (node_mib * args.nodes))
    finally:
        for lab in labs:
            cli("down", "--lab", lab, "--yes", check=False)
        if ksm_before and args.ksm == "off":
            ksm.apply(ksm_before)
    if args.tb_curve:
        figures["tb_curve"] = curve
    report(figures)


def report(figures: dict) -> None:
    formed = figures["formed"]
    print(f"\n{figures['labs']} labs of {figures['nodes_per_lab']} nodes; guest {figures['memory_mib']} MiB, "
          f"translation cache {figures['tb_cache_mib']}; KSM {figures['ksm']}")
    print(f"  first `up {figures['nodes_per_lab']}`: {figures.get('up_s')} s ({figures.get('up_starts')})")
    print(f"  per formed node: PSS {formed['pss_mib_per_node']} MiB (max {formed['pss_mib_max']}), host "
          f"{formed['host_mib_per_node']} MiB ({formed['pss_mib_parts']}); KSM saves "
          f"{formed['ksm_saved_mib_per_node']} MiB a node, ksmd {formed['ksmd_cpu_percent']} % of a core")
    if "after_exercises" in figures:
        print(f"  per node after all nine exercises ({'all passed' if figures['exercises_passed'] else 'FAILED'}, "
              f"{figures['exercises_s']} s): PSS {figures['after_exercises']['pss_mib_per_node']} MiB")
    print(f"  labs per 24 GiB host (90 % for nodes): {figures['labs_per_24gib']}")
    print(json.dumps({"labs_per_24gib": figures["labs_per_24gib"],
                      "node_pss_mib_formed": formed["pss_mib_per_node"],
                      "node_host_mib_formed": formed["host_mib_per_node"],
                      "node_pss_mib_after_exercises": figures.get("after_exercises", {}).get("pss_mib_per_node"),
                      "up3_s" if figures["nodes_per_lab"] == 3 else "up_s": figures.get("up_s"), **figures}))


if __name__ == "__main__":
    main()
