"""qcow2 disk images in and out of a VDI with `qemu-img` (Debian's qemu-utils), which Xen
Orchestra uses for disks over 2 TiB, where VHD ends.

qcow2 is not a streaming format (its tables may come after the data), so both ways go through
a file in the data disk's spool directory: export converts the VDI's raw file to qcow2 there
(`qemu-img convert` skips holes, so the cost follows the data) and streams it; import spools the
upload, checks it with `qemu-img info` (format forced to qcow2, never probed; a backing file, an
external data file or a virtual size over the VDI's is refused, so an image cannot make qemu-img
read another file) and
converts it to raw beside the VDI's file, moved over it only when done. Blocking: for a worker.
"""

from __future__ import annotations

import json
import os
import subprocess

from ..model.errors import XenAPIError
from .sidefile import SideFile

__all__ = ["to_qcow2", "check_qcow2", "from_qcow2"]


def _run(args: list[str]) -> str:
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise XenAPIError("VDI_IO_ERROR", f"qemu-img: {p.stderr.strip()[-300:]}")
    return p.stdout


def to_qcow2(raw: str, out: str) -> int:
    """`raw` (a VDI's file) as a qcow2 image `out`; returns its length."""
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out])
    return os.path.getsize(out)


def check_qcow2(path: str, limit: int) -> int:
    """The virtual size of the uploaded image, if it is a plain qcow2 that fits `limit` bytes."""
    try:
        info = json.loads(_run(["qemu-img", "info", "-f", "qcow2", "--output=json", path]))
    except XenAPIError as e:
        raise XenAPIError("VDI_IO_ERROR", f"not a qcow2 image: {e.params[0]}") from None
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise XenAPIError("VDI_IO_ERROR", "a qcow2 image with a backing file is refused")
    if "data-file" in info.get("format-specific", {}).get("data", {}):
        # qcow2 v3 may keep its data in another file, named inside the image: any host file
        raise XenAPIError("VDI_IO_ERROR", "a qcow2 image with an external data file is refused")
    if info.get("format") != "qcow2" or info.get("encrypted"):
        raise XenAPIError("VDI_IO_ERROR", "not a plain qcow2 image")
    size = int(info.get("virtual-size", 0))
    if size > limit:
        raise XenAPIError("VDI_IO_ERROR", f"a {size}-byte image does not fit a {limit}-byte VDI")
    return size


def from_qcow2(image: str, path: str, size: int) -> None:
    """Convert `image` to raw in the side file of the VDI's file `path` (sparse, `size` bytes),
    then move it over the VDI."""
    side = SideFile(path, size, copy=False)
    try:
        side.discard()
        _run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, side.part])
        os.truncate(side.part, size)
        side.commit()
    finally:
        side.close()
