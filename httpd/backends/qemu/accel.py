"""Which accelerator really runs guests here: KVM only if a probe guest, booted under it,
prints its first kernel line within a few seconds, else TCG.

On some machines `/dev/kvm` opens and QEMU creates the VM, yet the guest never runs (all system
time, no output). Opening the device proves nothing; only a guest that speaks does. The probe
boots the guest kernel with no root file system: it prints its banner (the proof), then
panics, and `-no-reboot` ends QEMU.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

__all__ = ["probe", "QEMU"]

QEMU = "qemu-system-x86_64"
_BANNER = b"Linux version"


def _speaks(accel: str, kernel: Path, timeout: float, qemu: str) -> bool:
    cmd = [qemu, "-accel", accel, "-m", "128", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-monitor", "none", "-kernel", str(kernel),
           "-append", "console=ttyS0 panic=-1 earlyprintk=ttyS0"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return False
    tail = b""          # the end of what was read: a banner split between two reads
    deadline = time.monotonic() + timeout
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        while True:
            running = time.monotonic() < deadline and proc.poll() is None
            seen = tail + (proc.stdout.read() or b"")     # all of it, however much came
            if _BANNER in seen:
                return True
            tail = seen[-len(_BANNER):]
            if not running:
                return False
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def probe(kernel: Path, *, timeout: float = 8.0, qemu: str = QEMU) -> str:
    """"kvm" when a guest really runs under KVM within `timeout`, else "tcg"."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError:
        return "tcg"
    os.close(fd)
    return "kvm" if _speaks("kvm", kernel, timeout, qemu) else "tcg"
