"""pygrub: the kernel a PV guest names in its own boot configuration, read from its disk.

As Xen's pygrub does, the agent looks into the guest's file system (never mounting it: `debugfs`
from e2fsprogs reads an ext2/3/4 image as a file) for a GRUB 2 `grub.cfg`, a GRUB legacy
`menu.lst`, or an `extlinux.conf`, takes the default entry's kernel, initrd and arguments, and
copies those two files out for QEMU's direct kernel boot. The file system fills the disk (as a
provisioned guest's does) or is in one of its partitions (MBR or GPT, read by `partx`).

`parse` is pure (text in, BootEntry out); `extract` runs debugfs (blocking: for a worker).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BootEntry", "BootError", "CONFIGS", "parse", "extract"]

CONFIGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg", "/boot/grub/menu.lst",
           "/boot/grub/grub.conf", "/boot/extlinux/extlinux.conf", "/extlinux.conf")


class BootError(Exception):
    """No kernel could be found on the disk (the reason says why)."""


@dataclass(frozen=True)
class BootEntry:
    title: str
    kernel: str           # a path in the guest's file system
    initrd: str = ""
    args: str = ""


def _default_index(value: str, titles: list[str]) -> int:
    value = value.strip().strip("\"'")
    if value.isdigit():
        return int(value)
    return titles.index(value) if value in titles else 0


def _grub2(text: str) -> tuple[list[BootEntry], int]:
    entries: list[BootEntry] = []
    default = "0"
    current: dict | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.match(r"set\s+default=(.*)", line):
            default = m.group(1)
        elif m := re.match(r"menuentry\s+(['\"])(.*?)\1", line):
            current = {"title": m.group(2), "kernel": "", "initrd": "", "args": ""}
        elif current is not None and re.match(r"(linux|linux16|linuxefi)\s", line):
            words = line.split(None, 2)
            current["kernel"] = words[1]
            current["args"] = words[2] if len(words) > 2 else ""
        elif current is not None and re.match(r"(initrd|initrd16|initrdefi)\s", line):
            current["initrd"] = line.split()[1]
        elif current is not None and line.startswith("}"):
            if current["kernel"]:
                entries.append(BootEntry(**current))
            current = None
    return entries, _default_index(default, [e.title for e in entries])


def _legacy(text: str) -> tuple[list[BootEntry], int]:
    entries: list[dict] = []
    default = "0"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        key, rest = key.lower(), rest.strip()
        if "=" in key and not rest:
            key, _, rest = key.partition("=")
        if key == "default":
            default = rest
        elif key == "title":
            entries.append({"title": rest, "kernel": "", "initrd": "", "args": ""})
        elif key == "kernel" and entries:
            words = rest.split(None, 1)
            entries[-1]["kernel"] = re.sub(r"^\(hd\d+(,\d+)?\)", "", words[0])
            entries[-1]["args"] = words[1] if len(words) > 1 else ""
        elif key == "initrd" and entries:
            entries[-1]["initrd"] = re.sub(r"^\(hd\d+(,\d+)?\)", "", rest.split()[0])
    found = [BootEntry(**e) for e in entries if e["kernel"]]
    return found, _default_index(default, [e.title for e in found])


def _extlinux(text: str) -> tuple[list[BootEntry], int]:
    entries: list[dict] = []
    default = ""
    for raw in text.splitlines():
        key, _, rest = raw.strip().partition(" ")
        key, rest = key.upper(), rest.strip()
        if key == "DEFAULT":
            default = rest
        elif key == "LABEL":
            entries.append({"title": rest, "kernel": "", "initrd": "", "args": ""})
        elif key in ("KERNEL", "LINUX") and entries:
            entries[-1]["kernel"] = rest
        elif key == "INITRD" and entries:
            entries[-1]["initrd"] = rest
        elif key == "APPEND" and entries:
            words = []
            for word in rest.split():
                if word.startswith("initrd="):
                    entries[-1]["initrd"] = word.split("=", 1)[1]
                else:
                    words.append(word)
            entries[-1]["args"] = " ".join(words)
    found = [BootEntry(**e) for e in entries if e["kernel"]]
    return found, _default_index(default, [e.title for e in found])


def parse(path: str, text: str) -> BootEntry:
    """The default entry of the boot configuration `text` found at `path`."""
    if path.endswith("grub.cfg"):
        entries, default = _grub2(text)
    elif "extlinux" in path:
        entries, default = _extlinux(text)
    else:
        entries, default = _legacy(text)
    if not entries:
        raise BootError(f"{path} names no kernel")
    entry = entries[default] if default < len(entries) else entries[0]
    base = str(Path(path).parent) if "extlinux" in path else ""
    return BootEntry(entry.title, _absolute(entry.kernel, base),
                     _absolute(entry.initrd, base) if entry.initrd else "", entry.args)


def _absolute(p: str, base: str) -> str:
    return p if p.startswith("/") else f"{base or ''}/{p}"


def _debugfs(image: str, request: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["debugfs", "-R", request, image], capture_output=True,
                              timeout=60)
    except FileNotFoundError:
        raise BootError("debugfs is not installed (Debian's e2fsprogs)") from None
    except subprocess.TimeoutExpired:
        raise BootError("debugfs did not finish reading the disk") from None


class _NoFileSystem(BootError):
    """debugfs found no ext2/3/4 file system where it looked."""


def _read(image: str, path: str) -> str | None:
    done = _debugfs(image, f"cat {shlex.quote(path)}")
    err = done.stderr.decode(errors="replace")
    if "Bad magic number" in err or "Couldn't find valid filesystem" in err:
        raise _NoFileSystem("the disk holds no ext2/3/4 file system")
    if done.returncode or "not found" in err or "File not found" in err:
        return None
    return done.stdout.decode(errors="replace")


def _partitions(image: str) -> list[int]:
    """Byte offsets of the disk's partitions (an MBR or GPT table, as util-linux's partx
    reads it), the one flagged bootable first; [] for a disk without a table."""
    try:
        done = subprocess.run(["partx", "--show", "-g", "-o", "START,FLAGS", image],
                              capture_output=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    if done.returncode:
        return []
    rows = [line.split() for line in done.stdout.decode(errors="replace").splitlines()]
    parts = [(int(r[0]), r[1] if len(r) > 1 else "") for r in rows if r and r[0].isdigit()]
    parts.sort(key=lambda p: p[1] != "0x80")
    return [start * 512 for start, _ in parts]


def _locate(image: str) -> tuple[str, BootEntry]:
    """(debugfs's name for the file system that holds the boot configuration, its default
    entry): the whole disk, else each partition (`image?offset=N`, e2fsprogs' own syntax)."""
    found_fs = False
    for spec in [image, *(f"{image}?offset={off}" for off in _partitions(image))]:
        try:
            for config in CONFIGS:
                text = _read(spec, config)
                if text is not None:
                    return spec, parse(config, text)
        except _NoFileSystem:
            continue                       # no file system here: the next partition
        found_fs = True
    if not found_fs:
        raise BootError("the disk holds no ext2/3/4 file system (on the whole disk or in a "
                        "partition)")
    raise BootError("no boot configuration (grub.cfg, menu.lst, extlinux.conf) on the disk")


def extract(image: str, dest: Path) -> tuple[Path, Path | None, str]:
    """(kernel file, initrd file or None, kernel arguments): the default entry's kernel and
    initrd copied from the disk image (its whole-disk file system, or a partition's) into
    `dest`. BootError if there is none."""
    image, entry = _locate(image)
    kernel = dest / "kernel"
    initrd = dest / "initrd" if entry.initrd else None
    for src, out in ((entry.kernel, kernel), (entry.initrd, initrd)):
        if out is None:
            continue
        out.unlink(missing_ok=True)
        _debugfs(image, f"dump {shlex.quote(src)} {shlex.quote(str(out))}")
        if not out.exists() or out.stat().st_size == 0:
            raise BootError(f"{src}, named by the boot configuration, is not on the disk")
    return kernel, initrd, entry.args
