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

_RCS = """\
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp
mount -t devpts devpts /dev/pts
hostname -F /etc/hostname
echo "xcp-httpd guest $(hostname): up"
"""


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


WANTED = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console")
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
    """`dest/boot/vmlinuz-*` (and `dest/modules/`), fetched and unpacked first if missing."""
    found = sorted((dest / "boot").glob("vmlinuz-*")) if (dest / "boot").is_dir() else []
    if found and (dest / "modules" / "order").exists():
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


def build_rootfs(path: Path, *, hostname: str = "demo", size_mib: int = 64) -> None:
    """A bootable ext4 image at `path` (`init=/sbin/init`, root on the first disk)."""
    if not BUSYBOX.exists():
        raise GuestError(f"{BUSYBOX} is missing (Debian's busybox-static)")
    part = path.with_name(path.name + ".part")
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for d in ("bin", "sbin", "etc/init.d", "proc", "sys", "dev", "root", "tmp", "usr/bin",
                  "usr/sbin", "var/log"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        applets = _run([str(BUSYBOX), "--list-full"]).stdout.split()
        for applet in applets:                       # bin/sh, sbin/getty, usr/bin/...
            link = root / applet
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        (root / "etc" / "inittab").write_text(_INITTAB)
        rcs = root / "etc" / "init.d" / "rcS"
        rcs.write_text(_RCS)
        rcs.chmod(0o755)
        (root / "etc" / "hostname").write_text(hostname + "\n")
        (root / "etc" / "passwd").write_text("root::0:0:root:/root:/bin/sh\n")
        (root / "etc" / "group").write_text("root:x:0:\n")
        (root / "etc" / "issue").write_text(f"xcp-httpd guest {hostname}\n\n")
        try:
            _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(part),
                  f"{size_mib}M"])
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
