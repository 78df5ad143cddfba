"""The QEMU command line of one domain, as a pure function of its configuration (no I/O).

Every socket is a Unix socket in the domain's run directory (QMP, VNC, the serial port), so
no TCP port opens that another local user could reach. QEMU starts stopped (`-S`): the backend
connects to QMP first and says `cont` itself, so nothing the guest does is missed. `-daemonize`
puts QEMU in its own session, away from the agent: it outlives a restart of the agent (and a
kill -9), which finds it again through the pid file and the QMP socket.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..base import DiskSpec, DomainConfig, NicSpec

__all__ = ["RunDir", "argv", "disk_id", "disk_args", "nic_id", "nic_args", "MACHINE"]

GUEST_PORT = "org.xcp-httpd.guest.0"   # the in-guest agent's virtio-serial port
BALLOON_PATH = "/machine/peripheral/balloon0"   # its QOM path (the device's id: balloon0)
BALLOON_POLL = 5       # seconds between the guest driver's memory reports
MACHINE = "pc"         # i440fx: ACPI PCI hot plug of virtio devices on the root bus
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class RunDir:
    """Where one domain's QEMU keeps its sockets and pid file."""
    path: Path

    @property
    def qmp(self) -> Path:
        return self.path / "qmp.sock"

    @property
    def vnc(self) -> Path:
        return self.path / "vnc.sock"

    @property
    def serial(self) -> Path:
        return self.path / "serial.sock"

    @property
    def guest(self) -> Path:
        return self.path / "guest.sock"

    @property
    def pidfile(self) -> Path:
        return self.path / "qemu.pid"

    @property
    def log(self) -> Path:
        return self.path / "qemu.log"

    @property
    def facts(self) -> Path:
        return self.path / "domain.json"


def _opt(value: str) -> str:
    """A value inside QEMU's comma-separated options (a comma is written twice)."""
    return value.replace(",", ",,")


def disk_id(device: str) -> str:
    return "disk-" + _SAFE_ID.sub("_", device)


def nic_id(device: str) -> str:
    return "nic-" + _SAFE_ID.sub("_", device)


def disk_args(disk: DiskSpec) -> tuple[dict | None, dict]:
    """(blockdev-add arguments, device_add arguments) of one disk: a raw node on the VDI's
    file, and a virtio disk on it (an IDE CD-ROM for a CD).  An empty CD drive (no path)
    has no node: (None, a drive with no medium until one is put in)."""
    node = disk_id(disk.device)
    driver = "ide-cd" if disk.cdrom else "virtio-blk-pci"
    if not disk.path:
        return None, {"driver": driver, "id": node}
    ro = disk.read_only or disk.cdrom
    blockdev = {"driver": "raw", "node-name": node, "read-only": ro,
                "file": {"driver": "file", "filename": disk.path, "read-only": ro}}
    return blockdev, {"driver": driver, "id": node, "drive": node}


def nic_args(nic: NicSpec) -> tuple[dict, dict]:
    """(netdev_add arguments, device_add arguments) of one NIC: a tap device when the agent
    made one on the network's bridge, else a user-mode network of its own that reaches
    nothing outside (restrict), with a DHCP server giving the guest an address."""
    ident = nic_id(nic.device)
    if nic.tap:
        netdev = {"type": "tap", "id": ident, "ifname": nic.tap, "script": "no",
                  "downscript": "no"}
    else:
        netdev = {"type": "user", "id": ident, "restrict": True}
    device = {"driver": "virtio-net-pci", "id": ident, "netdev": ident, "mac": nic.mac,
              "host_mtu": nic.mtu}
    return netdev, device


def _netdev_opts(netdev: dict) -> str:
    parts = [netdev["type"]]
    for k, v in netdev.items():
        if k != "type":
            parts.append(f"{k}={_opt('on' if v is True else 'off' if v is False else str(v))}")
    return ",".join(parts)


_ON = {"1", "true", "on", "yes"}
_OFF = {"0", "false", "off", "no"}


def platform_args(platform: dict[str, str], vcpus: int) -> tuple[str, str, list[str]]:
    """VM.platform's flags that QEMU has, as (machine options, -smp, further arguments):
    acpi and hpet (machine options; off only when asked), cores-per-socket (the -smp
    topology, when it divides the vCPUs), nx, pae and apic set false (CPU flags taken off),
    vga (std or cirrus) and videoram (MiB), usb and usb_tablet. Other keys (viridian,
    timeoffset, device_id, ...) have no QEMU meaning here and are left in the record."""
    get = {k.lower(): v.strip().lower() for k, v in platform.items()}.get
    machine = "".join(f",{k}=off" for k in ("acpi", "hpet") if get(k, "") in _OFF)
    smp = str(vcpus)
    cores = get("cores-per-socket", "")
    if cores.isdigit() and 0 < int(cores) <= vcpus and vcpus % int(cores) == 0:
        smp = f"{vcpus},sockets={vcpus // int(cores)},cores={int(cores)}"
    vga = "cirrus" if get("vga", "") == "cirrus" else "std"
    extra = ["-vga", vga]
    vram = get("videoram", "")
    if vram.isdigit() and 1 <= int(vram) <= 256:
        extra += ["-global", f"{'cirrus-vga' if vga == 'cirrus' else 'VGA'}.vgamem_mb={vram}"]
    off = [f"-{flag}" for flag in ("nx", "pae", "apic") if get(flag, "") in _OFF]
    if off:
        extra += ["-cpu", ",".join(["qemu64", *off])]
    tablet = get("usb_tablet", "") in _ON
    if tablet or get("usb", "") in _ON:
        extra += ["-usb", *(["-device", "usb-tablet"] if tablet else [])]
    return machine, smp, extra


def argv(config: DomainConfig, run: RunDir, *, accel: str, qemu: str = "qemu-system-x86_64",
         incoming: bool = False) -> list[str]:
    mib = max(16, -(-config.memory // 2**20))
    machine, smp, platform = platform_args(dict(config.platform), max(1, config.vcpus))
    cmd = [qemu, "-name", f"guest={_opt(config.name or config.uuid)},debug-threads=on",
           "-uuid", config.uuid, "-machine", f"{MACHINE},accel={accel}{machine}",
           "-smp", smp, "-m", f"{mib}M",
           "-nodefaults", "-no-user-config", "-display", "none", *platform,
           "-qmp", f"unix:{_opt(str(run.qmp))},server=on,wait=off",
           "-chardev", f"socket,id=serial0,path={_opt(str(run.serial))},server=on,wait=off",
           "-serial", "chardev:serial0",
           "-chardev", f"socket,id=guest0,path={_opt(str(run.guest))},server=on,wait=off",
           "-device", "virtio-serial-pci,id=vser0",
           "-device", f"virtserialport,bus=vser0.0,chardev=guest0,name={GUEST_PORT}",
           "-pidfile", str(run.pidfile), "-D", str(run.log), "-daemonize", "-S"]
    if config.vnc:
        cmd += ["-vnc", f"unix:{_opt(str(run.vnc))}"]
    if config.kernel:
        cmd += ["-kernel", config.kernel]
        if config.ramdisk:
            cmd += ["-initrd", config.ramdisk]
        if config.kernel_args:
            cmd += ["-append", config.kernel_args]
    elif config.boot_order:
        cmd += ["-boot", f"order={_opt(config.boot_order)}"]
    for disk in config.disks:
        blockdev, device = disk_args(disk)
        if blockdev is not None:
            cmd += ["-blockdev", json.dumps(blockdev)]
        cmd += ["-device", json.dumps(device)]
    for nic in config.nics:
        netdev, device = nic_args(nic)
        cmd += ["-netdev", _netdev_opts(netdev), "-device", json.dumps(device)]
    # last: the devices before it keep the PCI slots they had before guests got a balloon,
    # so a suspend image written then still finds them where it left them
    cmd += ["-device", "virtio-balloon-pci,id=balloon0"]
    if incoming:
        cmd += ["-incoming", "defer"]
    return cmd
