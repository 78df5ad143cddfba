"""The QEMU backend's first pieces (issue 16): the guest made from Debian packages boots under
the accelerator the probe chose, its root logs in on the serial console with no password, runs
a command and powers off. Real qemu-system-x86_64, a real cloud kernel (fetched once with
`apt-get download` into tests/.cache, never installed on the host)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from httpd.backends.qemu import accel
from httpd.backends.qemu.guest import GuestError, build_initramfs, build_rootfs, fetch_kernel

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "guest-kernel"


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel(CACHE)


@pytest.fixture(scope="module")
def chosen(kernel) -> str:
    return accel.probe(kernel)


def _expect(proc: subprocess.Popen, seen: bytearray, marker: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stdout.read() or b""
        if marker in seen:
            return True
        time.sleep(0.05)
    return marker in seen


def test_the_demo_guest_boots_logs_in_and_powers_off(kernel, chosen, tmp_path):
    initrd, root = tmp_path / "initrd.gz", tmp_path / "root.img"
    build_initramfs(CACHE, initrd)
    build_rootfs(root, hostname="probe-guest")
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", chosen, "-m", "256", "-display", "none", "-no-reboot",
         "-serial", "stdio", "-monitor", "none", "-kernel", str(kernel), "-initrd", str(initrd),
         "-append", "console=ttyS0 quiet", "-drive", f"file={root},format=raw,if=virtio"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    os.set_blocking(proc.stdout.fileno(), False)
    seen = bytearray()
    try:
        assert _expect(proc, seen, b"probe-guest login:", 120), seen[-2000:]
        proc.stdin.write(b"root\n")
        proc.stdin.flush()
        assert _expect(proc, seen, b"# ", 60), seen[-2000:]          # no password asked
        proc.stdin.write(b"echo guest-says-$((6*7)) $(cat /proc/sys/kernel/hostname)\n")
        proc.stdin.flush()
        assert _expect(proc, seen, b"guest-says-42 probe-guest", 60), seen[-2000:]
        proc.stdin.write(b"poweroff -f\n")
        proc.stdin.flush()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_probe_sees_a_banner_followed_by_much_output(tmp_path):
    """A guest that prints its banner and then more than a read's worth before the probe looks
    (a fast TCG boot, a loaded machine): the banner still counts (the probe kept only the last
    4 KiB of each read, so a CI run once took a speaking guest for a silent one)."""
    fake = tmp_path / "qemu"
    fake.write_text("#!/bin/sh\nprintf 'Linux version 6.1\\n'\n"
                    "head -c 65536 /dev/zero | tr '\\0' x\n")
    fake.chmod(0o755)
    assert accel._speaks("tcg", tmp_path / "no-kernel", 10, str(fake))
    silent = tmp_path / "silent"
    silent.write_text("#!/bin/sh\nhead -c 65536 /dev/zero | tr '\\0' x\n")
    silent.chmod(0o755)
    assert not accel._speaks("tcg", tmp_path / "no-kernel", 10, str(silent))


def test_the_probe_picks_kvm_only_when_a_guest_speaks_under_it(kernel, chosen):
    """/dev/kvm opens here but guests under KVM hang: only a guest's first kernel line counts."""
    assert accel._speaks("tcg", kernel, 180, accel.QEMU)          # the probe sees a live guest
    assert chosen == ("kvm" if accel._speaks("kvm", kernel, 8, accel.QEMU) else "tcg")
    assert accel.probe(kernel, qemu="/nonexistent/qemu") == "tcg"


def test_missing_pieces_are_a_clear_error(tmp_path, monkeypatch):
    from httpd.backends.qemu import guest
    monkeypatch.setattr(guest, "BUSYBOX", tmp_path / "no-busybox")
    with pytest.raises(GuestError, match="busybox-static"):
        build_rootfs(tmp_path / "root.img")
    assert not (tmp_path / "root.img").exists() and not list(tmp_path.iterdir())
