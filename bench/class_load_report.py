"""What bench_class_load.py prints: each phase's percentiles, the issues' targets beside the
figures, and the last JSON line that scripts read."""

from __future__ import annotations

import json


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
    if "hostile" in figures:
        figures["hostile_cpu_share"] = figures["hostile"]["first_lab_cpu_share"]
    if "hostile" in figures:  # the issue's target: the others' echo p99, calm against hostile
        for kind, key in (("portal", "others_p99_change"), ("direct", "others_direct_p99_change")):
            before = ms(f"{kind} (others)") or ms(kind)  # calm: every lab is one of "the others"
            after = ms(f"{kind} (others)", figures["hostile"])
            if before and after:
                figures[key] = round(after / before - 1, 2)
    print(f"echo p99 portal/direct {figures['echo_p99_ratio']} (target <= 1.5); check alone {figures['check_alone_s']} s "
          f"(target <= 2), check p99 {figures['check_p99_s']} s (target <= 2x alone); status p99 "
          f"{figures['status_p99_s']} s (target <= 5); portal RSS {figures['portal_rss_mib']} MiB (target <= 300); "
          f"errors {figures['errors']} (target 0)"
          + (f"; others' echo p99 moved {figures['others_p99_change']:+.0%} through the portal, "
             f"{figures.get('others_direct_p99_change', 0):+.0%} over direct SSH (target <= +20%)"
             if "others_p99_change" in figures else "")
          + (f"; the hostile lab took {figures['hostile_cpu_share']:.0%} of the host's CPUs"
             if "hostile_cpu_share" in figures else ""))
    print(json.dumps(figures))
