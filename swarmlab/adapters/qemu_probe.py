"""Probes of qemu on this machine, outside libvirt."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def kvm_works(kernel: Path, timeout: float = 20) -> bool:
    """True when a guest really runs under KVM here. /dev/kvm can exist while guests hang
    (nested setups), so boot the template kernel with no root: it panics and, with
    panic=-1 and -no-reboot, qemu exits. A hang means KVM is not usable."""
    if not Path("/dev/kvm").exists():
        return False
    with tempfile.TemporaryDirectory() as tmp:
        console = Path(tmp) / "console"
        proc = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "kvm", "-m", "256", "-display", "none", "-no-reboot",
             "-serial", f"file:{console}", "-kernel", str(kernel),
             "-append", "console=ttyS0 panic=-1 root=/dev/null"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            # A qemu stuck inside KVM can take a minute to die; do not wait for it.
            proc.kill()
            return False
        return proc.returncode == 0 and "Kernel panic" in console.read_text(errors="replace")
