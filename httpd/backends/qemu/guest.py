"""The guest the QEMU backend boots, made from Debian packages only.

- The kernel: the package `linux-image-cloud-amd64` depends on, fetched with `apt-get download`
  and unpacked with `dpkg -x` into a scratch directory. It is never installed as the host's
  kernel. Kept in the agent's data directory: `boot/vmlinuz-*` and the virtio modules the
  guest needs, with their dependencies (the cloud kernel builds virtio as modules).
- An initramfs (busybox, those modules, an /init that loads them, mounts the first disk and
  switches to it), packed by `cpio`.
- The root file system: ext4 made by `mkfs.ext4 -d` from a directory holding busybox (from
  `busybox-static`) and an init. It mounts /proc, /sys and /dev, names the host, and runs a
  getty on the serial console and on tty1. root has no password, so it logs in at once.

Blocking functions (subprocesses, file work): run them on a worker. They raise GuestError
with the reason and leave nothing half-made.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["GuestError", "KERNEL_META", "kernel_package", "fetch_kernel", "build_initramfs",
           "build_rootfs"]

KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")

_INITTAB = """\
::sysinit:/etc/init.d/rcS
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
tty1::respawn:/sbin/getty 38400 tty1
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
"""

# Starts at boot: mounts, the host name, acpid (the ACPI power button powers off, as the
# agent's clean_shutdown asks), DHCP on every NIC, and the guest agent.
_RCS = """\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run
mount -t devpts devpts /dev/pts
hostname -F /etc/hostname
ip link set lo up
acpid
for nic in /sys/class/net/eth*; do
    [ -e "$nic" ] && udhcpc -b -q -S -i "${nic##*/}" -s /etc/udhcpc.script >/dev/null 2>&1
done
/sbin/xcp-guest-agent &
echo "xcp-httpd guest $(hostname): up"
"""

# udhcpc's hook: the lease's address and route on the NIC.
_UDHCPC = """\
#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
        ;;
esac
exit 0
"""

# The guest agent: every few seconds, what the agent reports in VM_guest_metrics, written to
# the virtio-serial port named org.xcp-httpd.guest.0 as `key value` lines ended by `.`.
# Hot-plugged NICs get a DHCP client here too.
_AGENT = """\
#!/bin/sh
port=""
for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = org.xcp-httpd.guest.0 ] && port=/dev/${p##*/}
done
[ -n "$port" ] || exit 0
while true; do
    for nic in /sys/class/net/eth*; do
        n=${nic##*/}
        [ -e /run/dhcp.$n ] && continue
        touch /run/dhcp.$n
        udhcpc -b -q -S -i "$n" -s /etc/udhcpc.script >/dev/null 2>&1
    done
    {
        echo "os $(cat /etc/guest-os)"
        echo "uname $(uname -r)"
        echo "uptime $(cut -d' ' -f1 /proc/uptime)"
        awk '/^MemTotal:/ {print "memtotal", $2} /^MemAvailable:/ {print "memfree", $2}' \
            /proc/meminfo
        for nic in /sys/class/net/eth*; do
            n=${nic##*/}
            [ -e "$nic" ] || continue
            addr=$(ip -o -4 addr show dev "$n" | awk '{print $4}' | cut -d/ -f1 | head -n1)
            echo "nic $(cat "$nic/address") ${addr:--}"
        done
        echo .
    } > "$port"
    sleep 5
done
"""

_ACPI_POWER = """\
#!/bin/sh
poweroff
"""

_GRUB = """\
set default=0
set timeout=0
menuentry '{title}' {{
    linux /boot/{kernel} root=/dev/vda console=tty1 console=ttyS0 quiet
    initrd /boot/{initrd}
}}
"""

OS_NAME = "xcp-httpd busybox guest"


class GuestError(Exception):
    """The guest's pieces could not be made (the reason says what was missing)."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)
    except FileNotFoundError:
        raise GuestError(f"{cmd[0]} is not installed") from None
    except subprocess.CalledProcessError as e:
        raise GuestError(f"{' '.join(cmd)} failed: {(e.stderr or e.stdout).strip()[-300:]}") \
            from None


def kernel_package() -> str:
    """The versioned kernel package the cloud meta-package depends on now."""
    out = _run(["apt-cache", "depends", KERNEL_META]).stdout
    for line in out.splitlines():
        dep = line.strip()
        if dep.startswith("Depends:") and "linux-image-" in dep:
            return dep.split(":", 1)[1].strip()
    raise GuestError(f"apt-cache knows no kernel that {KERNEL_META} depends on")


WANTED = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_balloon",
          "button", "evdev", "ata_piix", "sr_mod")
_DEPENDS = re.compile(rb"(?:^|\0)depends=([^\0]*)\0")


def _depends(ko: Path) -> list[str]:
    """A module's `depends=` (its .modinfo strings), read without modinfo."""
    m = _DEPENDS.search(ko.read_bytes())
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def _module_order(tree: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The modules `wanted` needs, dependencies first (what insmod must be given in order)."""
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in tree.rglob("*.ko*")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            raise GuestError(f"the kernel has no module {name}")
        for dep in _depends(files[name]):
            visit(dep)
        order.append(files[name])
    for name in wanted:
        visit(name)
    return order


def fetch_kernel(dest: Path) -> Path:
    """`dest/boot/vmlinuz-*` (and `dest/modules/`), fetched and unpacked first if missing;
    one fetch at a time per `dest` (two agents starting at once share the one download)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_kernel(dest)


def _fetch_kernel(dest: Path) -> Path:
    found = sorted((dest / "boot").glob("vmlinuz-*")) if (dest / "boot").is_dir() else []
    wanted = dest / "modules" / "wanted"
    if found and wanted.exists() and wanted.read_text().split() == list(WANTED):
        return found[-1]
    package = kernel_package()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as work:
        _run(["apt-get", "download", package], cwd=work)
        debs = list(Path(work).glob("*.deb"))
        if not debs:
            raise GuestError(f"apt-get download {package} left no package")
        unpacked = Path(work) / "root"
        _run(["dpkg", "-x", str(debs[0]), str(unpacked)])
        kernels = sorted((unpacked / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise GuestError(f"{debs[0].name} holds no /boot/vmlinuz-*")
        order = _module_order(unpacked / "lib" / "modules", WANTED)
        staged = Path(work) / "kept"
        (staged / "boot").mkdir(parents=True)
        (staged / "modules").mkdir()
        shutil.copyfile(kernels[-1], staged / "boot" / kernels[-1].name)
        for ko in order:
            shutil.copyfile(ko, staged / "modules" / ko.name)
        (staged / "modules" / "order").write_text("".join(ko.name + "\n" for ko in order))
        (staged / "modules" / "wanted").write_text("\n".join(WANTED) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)
    return sorted((dest / "boot").glob("vmlinuz-*"))[-1]


_INIT = """\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
    echo "initramfs: no root file system on /dev/vda"
    poweroff -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
"""


def build_initramfs(kernel_dir: Path, path: Path) -> None:
    """The gzipped newc cpio the kernel starts from (see the module docstring)."""
    if not BUSYBOX.exists():
        raise GuestError(f"{BUSYBOX} is missing (Debian's busybox-static)")
    part = path.with_name(path.name + ".part")
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for d in ("bin", "proc", "sys", "dev", "modules"):
            (root / d).mkdir()
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for applet in ("sh", "mount", "umount", "insmod", "mkdir", "sleep", "cat",
                       "switch_root", "poweroff", "echo"):
            (root / "bin" / applet).symlink_to("busybox")
        for f in (kernel_dir / "modules").iterdir():
            if f.name != "wanted":
                shutil.copyfile(f, root / "modules" / f.name)
        init = root / "init"
        init.write_text(_INIT)
        init.chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        try:
            with open(part, "wb") as out:
                cpio = subprocess.Popen(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
                gz = subprocess.Popen(["gzip", "-9"], stdin=cpio.stdout, stdout=out)
                cpio.stdout.close()
                _, err = cpio.communicate("\n".join(names).encode() + b"\n")
                if cpio.wait() or gz.wait():
                    raise GuestError(f"cpio failed: {err.decode().strip()[-300:]}")
            os.replace(part, path)
        except FileNotFoundError:
            raise GuestError("cpio is not installed") from None
        finally:
            part.unlink(missing_ok=True)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_rootfs(path: Path, *, hostname: str = "demo", size_mib: int = 64,
                 kernel_dir: Path | None = None, in_place: bool = False,
                 os_name: str = OS_NAME) -> None:
    """A bootable ext4 image at `path` (`init=/sbin/init`, root on the first disk).

    With `kernel_dir` (what fetch_kernel made), /boot holds that kernel, an initramfs and a
    GRUB 2 grub.cfg naming them, so pygrub boots the disk by itself. `in_place`: the file
    system fills the existing file `path` (a VDI), whatever its size."""
    if not BUSYBOX.exists():
        raise GuestError(f"{BUSYBOX} is missing (Debian's busybox-static)")
    part = path if in_place else path.with_name(path.name + ".part")
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for d in ("bin", "sbin", "etc/init.d", "proc", "sys", "dev", "root", "tmp", "run",
                  "usr/bin", "usr/sbin", "var/log", "boot"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = _run([str(BUSYBOX), "--list-full"]).stdout.split()
        for applet in applets:                       # bin/sh, sbin/getty, usr/bin/...
            link = root / applet
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        etc = root / "etc"
        _write(etc / "inittab", _INITTAB)
        _write(etc / "init.d" / "rcS", _RCS, 0o755)
        _write(etc / "udhcpc.script", _UDHCPC, 0o755)
        _write(etc / "acpi" / "PWRF" / "00000080", _ACPI_POWER, 0o755)
        _write(root / "sbin" / "xcp-guest-agent", _AGENT, 0o755)
        _write(etc / "hostname", hostname + "\n")
        _write(etc / "guest-os", os_name + "\n")
        _write(etc / "passwd", "root::0:0:root:/root:/bin/sh\n")
        _write(etc / "group", "root:x:0:\n")
        _write(etc / "issue", f"{os_name} {hostname}\n\n")
        if kernel_dir is not None:
            kernel = sorted((kernel_dir / "boot").glob("vmlinuz-*"))[-1]
            shutil.copyfile(kernel, root / "boot" / kernel.name)
            initrd = "initrd.img-" + kernel.name.removeprefix("vmlinuz-")
            build_initramfs(kernel_dir, root / "boot" / initrd)
            _write(root / "boot" / "grub" / "grub.cfg",
                   _GRUB.format(title=os_name, kernel=kernel.name, initrd=initrd))
        size = [] if in_place else [f"{size_mib}M"]
        try:
            _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-E",
                  "lazy_itable_init=1,lazy_journal_init=1", "-d", str(root), str(part), *size])
            if not in_place:
                os.replace(part, path)
        finally:
            if not in_place:
                part.unlink(missing_ok=True)
