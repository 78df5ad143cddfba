"""One VDI as a dynamic VHD, both ways (`/export_raw_vdi?format=vhd`, `/import_raw_vdi?format=vhd`).

Export: the blocks to send are the 2 MiB blocks that hold data (from SEEK_DATA extents), or with
a base VDI only those whose content differs from the base's (Xen Orchestra's incremental
backups: the delta since the previous snapshot; blocks neither file allocates, and on file
systems with reflinks (XFS, btrfs) blocks both files share on the device, are skipped without
reading, so the cost follows the data that changed). Import: the VHD's blocks are applied to a copy
of the VDI beside it (`<file>.part`, a reflink or a copy of its allocated data), moved over the
VDI only when the stream ended well: a bad or cut stream leaves the VDI as it was. Blocking
functions: run them on a worker.
"""

from __future__ import annotations

import os

from xva import digests
from xva.events import Write
from xva.files import data_extents, shared_extents
from xva.vhd import BLOCK_SIZE, VhdReader, VhdWriter

from ..core.filesr import digest_file
from .sidefile import SideFile

__all__ = ["changed_blocks", "VhdExport", "VhdApplier"]

_ZERO_BLOCK = bytes(BLOCK_SIZE)


def _blocks(fd: int, size: int) -> set[int]:
    out: set[int] = set()
    for start, length in data_extents(fd, size):
        out.update(range(start // BLOCK_SIZE, (start + length - 1) // BLOCK_SIZE + 1))
    return out


def _whole_blocks(ranges: list[tuple[int, int]], size: int) -> set[int]:
    """The blocks that lie wholly inside `ranges` (a disk's last block may be short)."""
    out: set[int] = set()
    for start, length in ranges:
        first = -(-start // BLOCK_SIZE)
        end = start + length
        last = end // BLOCK_SIZE if end < size else -(-size // BLOCK_SIZE)
        out.update(range(first, last))
    return out


def changed_blocks(path: str, size: int, base: str | None = None) -> list[int]:
    """The blocks of `path` to send: those with data, or those that may differ from `base`.
    Files that share device blocks (a reflinked snapshot and its base) differ only in the
    blocks they do not share, written since: those are sent unread (a block rewritten with
    the same bytes goes too; sending more is never wrong). Files that share none (copies)
    are compared by their digests where both have current ones (`xva.digests`), else read."""
    fd = os.open(path, os.O_RDONLY)
    try:
        mine = _blocks(fd, size)
        if base is None:
            return sorted(mine)
        bfd = os.open(base, os.O_RDONLY)
        try:
            theirs = _blocks(bfd, size)
            shared = shared_extents(fd, bfd, size)
            todo = sorted((mine | theirs) - _whole_blocks(shared, size))
            if not todo or shared:
                return todo
            a = digests.load(digest_file(path), fd, size, BLOCK_SIZE)
            c = digests.load(digest_file(base), bfd, size, BLOCK_SIZE) if a else None
            if a is not None and c is not None and a[0] == c[0]:
                return digests.differing(a[1], c[1], todo)
            out = []
            for b in todo:
                off, n = b * BLOCK_SIZE, min(BLOCK_SIZE, size - b * BLOCK_SIZE)
                a = os.pread(fd, n, off) if b in mine else _ZERO_BLOCK[:n]
                c = os.pread(bfd, n, off) if b in theirs else _ZERO_BLOCK[:n]
                if a != c:
                    out.append(b)
            return out
        finally:
            os.close(bfd)
    finally:
        os.close(fd)


class VhdExport:
    """The VHD stream of a VDI's file; `pieces` is pulled on a worker, `close()` releases."""

    def __init__(self, path: str, size: int, blocks: list[int]) -> None:
        self.writer = VhdWriter(size, blocks)
        self.total = self.writer.total
        self.sent = 0
        self._fd = os.open(path, os.O_RDONLY)
        self.pieces = self._pieces()

    def _pieces(self):
        for piece in self.writer.stream(lambda off, n: os.pread(self._fd, n, off)):
            self.sent += len(piece)
            yield piece

    def close(self) -> None:
        self.pieces.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class VhdApplier:
    """Apply a VHD stream to a copy of the VDI's file, then move it over the VDI."""

    def __init__(self, path: str, size: int) -> None:
        self.reader = VhdReader("vdi", size)
        self.side = SideFile(path, size, copy=True)

    def _apply(self, events) -> None:
        for e in events:
            if isinstance(e, Write):
                self.side.file().write(e.data, e.offset)

    def write(self, data: bytes) -> None:
        self._apply(self.reader.feed(data))

    def finish(self) -> int:
        self._apply(self.reader.close())
        self.side.commit()
        return self.reader.bytes_written

    def close(self) -> None:
        self.side.close()
