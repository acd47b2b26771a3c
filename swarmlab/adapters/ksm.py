"""The kernel's same-page merging (KSM) in sysfs. QEMU marks guest memory mergeable, and the
clones of one template hold the same kernel, binaries and files: once ksmd runs they share
those pages. `host up` turns it on at the rate below and records what it found; `host down`
puts that back."""

from __future__ import annotations

import os
from pathlib import Path

SYSFS = Path("/sys/kernel/mm/ksm")
SETTINGS = ("run", "pages_to_scan", "sleep_millisecs")
# Measured on 10 formed TCG nodes (2 cores): 3 GiB merged within 60 s, then ksmd used 3-6 %
# of one core. The kernel's default (100 pages every 20 ms) takes minutes per scan.
LAB_RATE = {"run": 1, "pages_to_scan": 1000, "sleep_millisecs": 20}


def available(root: Path = SYSFS) -> bool:
    return (root / "run").exists()


def settings(root: Path = SYSFS) -> dict[str, int]:
    return {name: int((root / name).read_text()) for name in SETTINGS}


def apply(values: dict[str, int], root: Path = SYSFS) -> None:
    """Rate first, then run: ksmd never runs at a rate it was not given."""
    for name in sorted(values, key=lambda n: n == "run"):
        (root / name).write_text(str(int(values[name])))


def saved_mib(root: Path = SYSFS) -> int:
    """Memory that merging saves now: pages mapped beyond the one kept copy."""
    return int((root / "pages_sharing").read_text()) * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


def reading(root: Path = SYSFS) -> dict | None:
    """What `host status` and `doctor` show: whether ksmd runs and what it saves; None
    without KSM in this kernel."""
    if not available(root):
        return None
    return {"on": settings(root)["run"] == 1, "saved_mib": saved_mib(root)}


def turn_on(root: Path = SYSFS) -> dict[str, int] | None:
    """KSM on at LAB_RATE. Returns the settings found before, to be restored, or None when
    nothing changed (no KSM in this kernel, or already as wanted)."""
    if not available(root):
        return None
    before = settings(root)
    if before == LAB_RATE:
        return None
    apply(LAB_RATE, root)
    return before
