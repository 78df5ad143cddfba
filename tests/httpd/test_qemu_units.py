"""The QEMU backend's pure parts: pygrub's reading of boot configurations, the guest agent's
report parser, the command line (issue 16). No QEMU runs here."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from httpd.backends.base import DiskSpec, DomainConfig, NicSpec
from httpd.backends.qemu import pygrub
from httpd.backends.qemu.channels import GuestReports
from httpd.backends.qemu.cmdline import RunDir, argv, platform_args
from httpd.backends.qemu.guest import build_rootfs


def test_grub2_default_entry_by_index_and_by_title():
    cfg = """
set default="1"
menuentry 'First' --class gnu {
    linux /boot/vmlinuz-a root=/dev/vda ro
    initrd /boot/initrd-a
}
menuentry "Second" {
    linux\t/vmlinuz-b quiet
}
"""
    assert pygrub.parse("/boot/grub/grub.cfg", cfg) == pygrub.BootEntry(
        "Second", "/vmlinuz-b", "", "quiet")
    named = cfg.replace('set default="1"', "set default='First'")
    assert pygrub.parse("/boot/grub/grub.cfg", named) == pygrub.BootEntry(
        "First", "/boot/vmlinuz-a", "/boot/initrd-a", "root=/dev/vda ro")


def test_legacy_menu_lst_and_extlinux():
    menu = """default 0
timeout 5
title Debian etch
root (hd0,0)
kernel (hd0,0)/boot/vmlinuz-2.6.18 root=/dev/xvda1 ro
initrd /boot/initrd.img-2.6.18
"""
    assert pygrub.parse("/boot/grub/menu.lst", menu) == pygrub.BootEntry(
        "Debian etch", "/boot/vmlinuz-2.6.18", "/boot/initrd.img-2.6.18", "root=/dev/xvda1 ro")
    ext = """DEFAULT linux
LABEL rescue
  KERNEL vmlinuz-rescue
LABEL linux
  LINUX vmlinuz
  APPEND root=/dev/vda initrd=initrd.img console=ttyS0
"""
    assert pygrub.parse("/boot/extlinux/extlinux.conf", ext) == pygrub.BootEntry(
        "linux", "/boot/extlinux/vmlinuz", "/boot/extlinux/initrd.img",
        "root=/dev/vda console=ttyS0")


def test_a_configuration_without_kernels_is_a_boot_error():
    with pytest.raises(pygrub.BootError, match="names no kernel"):
        pygrub.parse("/boot/grub/grub.cfg", "set default=0\n")


def test_extract_reads_the_kernel_from_a_real_file_system(tmp_path):
    """debugfs reads an ext4 image the guest builder made: the files pygrub names come out
    byte for byte; a disk with no file system is a clear BootError."""
    kernel_dir = tmp_path / "k"
    (kernel_dir / "boot").mkdir(parents=True)
    (kernel_dir / "modules").mkdir()
    (kernel_dir / "boot" / "vmlinuz-9.9").write_bytes(b"not really a kernel" * 1000)
    (kernel_dir / "modules" / "order").write_text("")
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    build_rootfs(image, hostname="unit", kernel_dir=kernel_dir, in_place=True)
    out = tmp_path / "out"
    out.mkdir()
    kernel, initrd, args = pygrub.extract(str(image), out)
    assert kernel.read_bytes() == (kernel_dir / "boot" / "vmlinuz-9.9").read_bytes()
    assert initrd is not None and initrd.read_bytes()[:2] == b"\x1f\x8b"      # gzipped cpio
    assert "root=/dev/vda" in args
    blank = tmp_path / "blank.img"
    subprocess.run(["truncate", "-s", "8M", str(blank)], check=True)
    with pytest.raises(pygrub.BootError, match="no ext2/3/4 file system"):
        pygrub.extract(str(blank), out)


def test_extract_finds_the_file_system_in_a_partition(tmp_path):
    """A disk with a partition table (here an MBR whose bootable partition starts at 1 MiB):
    pygrub reads the boot configuration and the kernel from that partition."""
    tree = tmp_path / "tree"
    (tree / "boot" / "grub").mkdir(parents=True)
    (tree / "boot" / "vmlinuz-7").write_bytes(b"partitioned kernel" * 500)
    (tree / "boot" / "grub" / "grub.cfg").write_text(
        "menuentry 'Partitioned' {\n  linux /boot/vmlinuz-7 root=/dev/vda1 quiet\n}\n")
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    mbr = bytearray(512)                 # one bootable Linux partition: sectors 2048..end
    mbr[446:462] = struct.pack("<B3sB3sII", 0x80, bytes(3), 0x83, bytes(3), 2048,
                               64 * 2048 - 2048)
    mbr[510:512] = b"\x55\xaa"
    with open(image, "r+b") as fh:
        fh.write(mbr)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), "-E", f"offset={2**20}",
                    str(image), "60M"], check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    kernel, initrd, args = pygrub.extract(str(image), out)
    assert kernel.read_bytes() == (tree / "boot" / "vmlinuz-7").read_bytes()
    assert initrd is None and args == "root=/dev/vda1 quiet"


def test_guest_reports_are_parsed_whole_and_bounded():
    p = GuestReports()
    assert p.feed(b"os xcp-httpd busybox guest\nuname 6.1\nupti") == []
    done = p.feed(b"me 12.5\nmemtotal 1000\nnic 52:54:00:AA:bb:cc 10.0.2.15\n"
                  b"nic 52:54:00:00:00:01 -\n.\nos next\n")
    assert done == [{"os": "xcp-httpd busybox guest", "uname": "6.1", "uptime": "12.5",
                     "memtotal": "1000", "nics": [("52:54:00:aa:bb:cc", "10.0.2.15"),
                                                  ("52:54:00:00:00:01", "")]}]
    # a line longer than any report line is dropped, not kept growing
    assert p.feed(b"x" * 10_000) == [] and p.feed(b"\n.\n") == [{"os": "next", "nics": []}]


def test_the_command_line_keeps_every_socket_in_the_run_directory(tmp_path):
    run = RunDir(tmp_path / "vm" / "u")
    cfg = DomainConfig(uuid="u", name="a,b", vcpus=2, memory=300 * 2**20 + 1,
                       disks=(DiskSpec("xvda", "/sr/a,b.raw"),
                              DiskSpec("xvdd", "/sr/cd.iso", cdrom=True)),
                       nics=(NicSpec("0", "52:54:00:12:34:56", 1400),),
                       kernel="/k", kernel_args="console=ttyS0")
    cmd = argv(cfg, run, accel="tcg")
    joined = " ".join(cmd)
    assert "tcp:" not in joined and "-vnc unix:" in joined and "-daemonize" in cmd
    assert cmd[cmd.index("-name") + 1] == "guest=a,,b,debug-threads=on"     # commas doubled
    assert cmd[cmd.index("-m") + 1] == "301M" and cmd[cmd.index("-smp") + 1] == "2"
    devices = [json.loads(cmd[i + 1]) for i, a in enumerate(cmd)
               if a == "-device" and cmd[i + 1].startswith("{")]
    assert {"driver": "ide-cd", "id": "disk-xvdd", "drive": "disk-xvdd"} in devices
    nic = next(d for d in devices if d["driver"] == "virtio-net-pci")
    assert nic["mac"] == "52:54:00:12:34:56" and nic["host_mtu"] == 1400
    blockdevs = [json.loads(cmd[i + 1]) for i, a in enumerate(cmd) if a == "-blockdev"]
    assert blockdevs[0]["file"]["filename"] == "/sr/a,b.raw"
    assert blockdevs[1]["read-only"] is True                         # a CD is read-only
    assert "restrict=on" in cmd[cmd.index("-netdev") + 1]
    assert Path(cmd[cmd.index("-pidfile") + 1]).parent == run.path


def test_platform_flags_with_a_qemu_equivalent():
    assert platform_args({}, 2) == ("", "2", ["-vga", "std"])
    machine, smp, extra = platform_args(
        {"acpi": "0", "hpet": "false", "cores-per-socket": "2", "vga": "cirrus",
         "videoram": "8", "nx": "false", "pae": "true", "usb": "true", "usb_tablet": "1",
         "viridian": "true", "timeoffset": "3600"}, 4)
    assert machine == ",acpi=off,hpet=off"
    assert smp == "4,sockets=2,cores=2"
    assert extra == ["-vga", "cirrus", "-global", "cirrus-vga.vgamem_mb=8", "-cpu", "qemu64,-nx",
                     "-usb", "-device", "usb-tablet"]
    # a topology that does not divide the vCPUs, a silly videoram: left as QEMU's defaults
    assert platform_args({"cores-per-socket": "3", "videoram": "999", "acpi": "1"}, 4) == \
        ("", "4", ["-vga", "std"])
    cfg = DomainConfig(uuid="u", name="p", vcpus=4, platform=(("cores-per-socket", "2"),
                                                               ("acpi", "0")))
    cmd = argv(cfg, RunDir(Path("/nonexistent")), accel="tcg")
    assert cmd[cmd.index("-machine") + 1] == "pc,accel=tcg,acpi=off"
    assert cmd[cmd.index("-smp") + 1] == "4,sockets=2,cores=2"


def test_a_hostile_guest_cannot_grow_a_report_without_end():
    """A guest that writes nic lines and never ends its report: the report holds at most
    MAX_NICS of them, and a later end still yields it."""
    p = GuestReports()
    for _ in range(100):
        assert p.feed(b"nic 52:54:00:00:00:01 10.0.0.1\n" * 100) == []
    (report,) = p.feed(b".\n")
    assert len(report["nics"]) == GuestReports.MAX_NICS
