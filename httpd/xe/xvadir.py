"""An XVA directory (ova.xml and the disks' block files, as xapi's exporters unpack them) as
a tar stream made on the fly, for `xe vm-import filename=<dir>`: imported only when a directory
is sent, as xva's tar code costs every other command's start."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

from xva.errors import XVAError
from xva.tar import TAR_END, safe_name, tar_header, tar_padding

from .client import XeError

__all__ = ["tar_stream", "tar_size"]

CHUNK = 1 << 20             # bytes a read takes from a member's file


def _members(root: Path) -> list[tuple[str, Path, os.stat_result, bytes]]:
    """The regular files under `root` (ova.xml first, as importers expect) with their tar
    headers, never following a symlink: one inside an XVA directory is refused rather than
    read from wherever it points."""
    out = []
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(top) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                raise XeError(f"Error: {path} is a symbolic link: an XVA directory holds "
                              "plain files only")
            if stat.S_ISREG(st.st_mode):
                rel = path.relative_to(root).as_posix()
                try:
                    name = safe_name(rel)
                    out.append((name, path, st, tar_header(name, st.st_size,
                                                           mtime=int(st.st_mtime))))
                except (XVAError, ValueError) as e:
                    raise XeError(f"Error: {path} cannot go into an XVA stream: {e}") from None
            elif not stat.S_ISDIR(st.st_mode):
                raise XeError(f"Error: {path} is not a regular file")
    out.sort(key=lambda t: (t[0] != "ova.xml", t[0]))
    return out


def tar_size(root: Path) -> int:
    return len(TAR_END) + sum(len(header) + st.st_size + len(tar_padding(st.st_size))
                              for _, _, st, header in _members(root))


def tar_stream(root: Path) -> Iterator[bytes]:
    """`root` as a tar stream, made on the fly (xva.tar's headers)."""
    for _, path, st, header in _members(root):
        yield header
        sent = 0
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_ino != st.st_ino:
                raise XeError(f"Error: {path} changed while being sent")
            while sent < st.st_size:
                block = f.read(min(CHUNK, st.st_size - sent))
                if not block:
                    raise XeError(f"Error: {path} shrank while being sent")
                sent += len(block)
                yield block
        yield tar_padding(st.st_size)
    yield TAR_END
