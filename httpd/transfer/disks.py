"""A VDI's file as an outgoing stream: raw (holes as shared zero buffers), a dynamic VHD (only
allocated blocks, or with a base only the blocks that differ), or qcow2 (made by qemu-img in a
spool file first: qcow2 cannot stream). Each is an :class:`Outgoing`: pieces pulled on a
worker, a length for Content-Length, progress, and `close()`, which also removes a spool file.
The builders block: run them on a worker.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

from xva.files import sparse_pieces

from .qcow2 import to_qcow2
from .vhd import VhdExport, changed_blocks

__all__ = ["Outgoing", "raw_out", "vhd_out", "qcow2_out"]

_PIECE = 1 << 20
_ZEROS = bytes(_PIECE)


@dataclass
class Outgoing:
    pieces: Iterator[bytes]
    length: int
    kind: str                                  # Content-Type
    progress: Callable[[], float]
    close: Callable[[], None]


def _raw_pieces(path: str, size: int, done: list[int]) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        pos = 0
        for offset, data in sparse_pieces(fd, size, piece=_PIECE):
            while pos < offset:
                n = min(_PIECE, offset - pos)
                yield _ZEROS[:n]
                pos += n
            yield data
            pos = offset + len(data)
            done[0] = pos
        while pos < size:
            n = min(_PIECE, size - pos)
            yield _ZEROS[:n]
            pos += n
            done[0] = pos
    finally:
        os.close(fd)


def raw_out(path: str, size: int) -> Outgoing:
    done = [0]
    pieces = _raw_pieces(path, size, done)
    return Outgoing(pieces, size, "application/octet-stream", lambda: done[0] / max(1, size),
                    pieces.close)


def vhd_out(path: str, size: int, base: str | None = None) -> Outgoing:
    vhd = VhdExport(path, size, changed_blocks(path, size, base))
    return Outgoing(vhd.pieces, vhd.total, "application/vhd",
                    lambda: vhd.sent / max(1, vhd.total), vhd.close)


def qcow2_out(path: str, image: str) -> Outgoing:
    """`image` (a spool path) made from `path`; removed by close(), or at once on failure."""
    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image)
    try:
        length = to_qcow2(path, image)
        f = open(image, "rb")
    except BaseException:
        remove()
        raise
    done = [0]

    def pieces() -> Iterator[bytes]:
        with f:
            while data := f.read(_PIECE):
                done[0] += len(data)
                yield data
    it = pieces()

    def close() -> None:
        it.close()
        f.close()
        remove()
    return Outgoing(it, length, "application/x-qemu-disk", lambda: done[0] / max(1, length),
                    close)
