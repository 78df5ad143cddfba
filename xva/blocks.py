"""The layout xapi writes today (export_vsn 2): ``ova.xml`` (an XML-RPC value, opaque here),
then per VDI ``Ref:N/%08d`` members of 1 MiB, each followed by ``Ref:N/%08d.xxhash`` (XXH64,
seed 0, 16 uppercase hex) or ``.checksum`` (SHA-1).  All-zero blocks are skipped except the
first and the last.  The block number is a COUNTER, so readers place blocks with
``pos += (n - last_n - 1) * first_block_len`` rather than ``n * 1 MiB``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping

import xxhash

from .appliance import check_pieces
from .errors import (IMPORT_ERROR_FAILED_TO_FIND_OBJECT, XVAFormatError, XVAUsageError)
from .events import DiskDone, Event, Warning_, Write, Zeros
from .gz import DEFAULT_LEVEL as GZIP_LEVEL, MEMBER_SIZE, ParallelGzip
from .tar import TAR_END, tar_header, tar_padding
from .zeros import is_zero, zero_spans
from .zstd import DEFAULT_LEVEL as ZSTD_LEVEL, ParallelZstd

__all__ = ["BLOCK_SIZE", "BlockDisks", "BlockWriter", "checksum_hex"]

BLOCK_SIZE = 1 << 20
MAX_BLOCK = 16 << 20          # tolerate larger blocks from other writers, but bounded
_BLOCK_RE = re.compile(r"(Ref:[^/]+)/([0-9]{1,20})(\.xxhash|\.checksum)?")
_EXTENSIONS = {"xxhash": ".xxhash", "sha1": ".checksum"}
_LEVELS = {"gzip": GZIP_LEVEL, "zstd": ZSTD_LEVEL}   # whole-stream compressions


def checksum_hex(kind: str, data: bytes | memoryview) -> str:
    """The checksum member's text: XXH64 as 16 uppercase hex digits, SHA-1 as 40 lowercase."""
    if kind == ".xxhash":
        return xxhash.xxh64_hexdigest(data).upper()
    return hashlib.sha1(data).hexdigest()


def _blocks(pieces: Iterator[tuple[int, bytes]], size: int
            ) -> Iterator[tuple[int, bytes | memoryview]]:
    """``(index, block)`` for every block that any data piece touches, in order."""
    block: bytearray | None = None
    index = -1
    for offset, data in pieces:
        view = memoryview(data)
        while len(view):
            i = offset // BLOCK_SIZE
            start = i * BLOCK_SIZE
            length = min(BLOCK_SIZE, size - start)
            if i != index:
                if block is not None:
                    yield index, bytes(block)
                block, index = None, i
                if offset == start and len(view) >= length:      # whole block: no copy
                    yield i, view[:length]
                    view, offset, index = view[length:], offset + length, -1
                    continue
                block = bytearray(length)
            take = min(len(view), start + length - offset)
            block[offset - start: offset - start + take] = view[:take]
            view, offset = view[take:], offset + take
    if block is not None:
        yield index, bytes(block)


class BlockWriter:
    """Stream an XVA in xapi's block layout. ``stream(disks)`` takes ``(ref_id, size, pieces)``
    triples (pieces: ``(offset, bytes)`` in increasing order, gaps are zeros) and yields
    bytes-like pieces (a block's data as it was read: bytes or a view). ``compression="gzip"``
    makes the whole stream gzip members, ``"zstd"`` zstd frames, each of about MEMBER_SIZE of
    tar, compressed on ``threads`` threads. ``level`` defaults to each one's own. Close the
    generator to cancel."""

    def __init__(self, ova_xml: bytes, *, checksum: str = "xxhash",
                 compression: str | None = None, level: int | None = None, threads: int = 2,
                 executor=None, mtime: int = 0) -> None:
        if checksum not in _EXTENSIONS:
            raise XVAUsageError(f"checksum must be one of {sorted(_EXTENSIONS)}")
        if compression is not None and compression not in _LEVELS:
            raise XVAUsageError(f"unsupported compression {compression!r} "
                                f"(one of {sorted(_LEVELS)})")
        if level is None and compression is not None:
            level = _LEVELS[compression]
        self._xml, self._ext, self._mtime = ova_xml, _EXTENSIONS[checksum], mtime
        self._compression, self._level = compression, level
        self._threads, self._executor = threads, executor
        self.total = 0
        self._base = 0
        self.done = 0                 # disk bytes (data and skipped zeros) already handled
        self.bytes_out = 0

    def stream(self, disks: Iterable[tuple[str, int, Iterable[tuple[int, bytes]]]]
               ) -> Iterator[bytes]:
        disks = sorted(disks, key=lambda d: d[0])
        for ref, size, _ in disks:
            if not re.fullmatch(r"Ref:[^/]+", ref) or size < 0:
                raise XVAUsageError(f"bad disk {ref!r} of size {size}")
        self.total = sum(d[1] for d in disks)
        tar = self._tar(disks)
        if self._compression is None:
            for piece in tar:
                self.bytes_out += len(piece)
                yield piece
            return
        yield from self._compressed(tar)

    def _tar(self, disks) -> Iterator[bytes]:
        yield self._member("ova.xml", self._xml)
        for ref, size, pieces in disks:
            yield from self._disk(ref, size, check_pieces(pieces, size))
        yield TAR_END

    def _member(self, name: str, data: bytes | memoryview) -> bytes:
        return b"".join((tar_header(name, len(data), mtime=self._mtime), data,
                         tar_padding(len(data))))

    def _disk(self, ref: str, size: int, pieces) -> Iterator[bytes]:
        last = max(0, (size - 1) // BLOCK_SIZE)
        written = -1
        for index, block in _blocks(pieces, size):
            if written < 0 and index > 0:                  # the first block is always there
                yield from self._block(ref, 0, bytes(min(BLOCK_SIZE, size)))
                written = 0
            if 0 < index < last and is_zero(block):
                continue
            yield from self._block(ref, index, block)
            written = index
            self.done = self._base + min(size, (index + 1) * BLOCK_SIZE)
        if written < 0:
            yield from self._block(ref, 0, bytes(min(BLOCK_SIZE, size)))
            written = 0
        if written < last:                                  # ... and so is the last one
            yield from self._block(ref, last, bytes(size - last * BLOCK_SIZE))
        self._base += size
        self.done = self._base

    def _block(self, ref: str, index: int, data: bytes | memoryview
               ) -> tuple[bytes, bytes | memoryview, bytes]:
        """A block's tar member and its checksum member, as three pieces: the block's data
        goes out as it was read, never copied into a member of its own."""
        name = f"{ref}/{index:08d}"
        digest = checksum_hex(self._ext, data).encode()
        return (tar_header(name, len(data), mtime=self._mtime), data,
                tar_padding(len(data)) + self._member(name + self._ext, digest))

    def _compressed(self, tar: Iterator[bytes]) -> Iterator[bytes]:
        """The tar stream cut into pieces of about MEMBER_SIZE, each compressed on the pool
        into a unit of its own (a gzip member, a zstd frame), in order."""
        kind = ParallelGzip if self._compression == "gzip" else ParallelZstd
        pool = kind(self._level, self._threads, self._executor)
        try:
            parts: list[bytes] = []
            held = 0
            for piece in tar:
                parts.append(piece)
                held += len(piece)
                if held >= MEMBER_SIZE:             # the worker frames or joins them
                    yield from self._counted(pool.submit(parts))
                    parts, held = [], 0
            if parts:
                yield from self._counted(pool.submit(parts))
            yield from self._counted(pool.drain())
        finally:
            pool.close()

    def _counted(self, outs: list[bytes]) -> Iterator[bytes]:
        for out in outs:
            self.bytes_out += len(out)
            yield out


class BlockDisks:
    """Consume the tar members after ``ova.xml`` of a block-layout XVA and emit disk events.

    ``disks`` maps each expected ``Ref:N`` to its size.  Each block is held (at most
    :data:`MAX_BLOCK` bytes) until its checksum member has been verified, so nothing
    unverified is emitted; ``force`` turns mismatches into :class:`Warning_` events."""

    def __init__(self, disks: Mapping[str, int], force: bool = False) -> None:
        for ref, size in disks.items():
            if size < 0:
                raise XVAUsageError(f"disk {ref} has a negative size")
        self._sizes = dict(disks)
        self._force = force
        self._seen: set[str] = set()
        self._ref: str | None = None          # current disk
        self._pos = 0
        self._last_n = -1
        self._first_len: int | None = None
        self._block = bytearray()
        self._block_name: str | None = None   # a block waiting for its checksum member
        self._block_at = 0
        self._sum_kind: str | None = None     # collecting a checksum member
        self._sum = bytearray()
        self._member_left = 0

    def start(self, name: str, size: int, directory: bool) -> list[Event]:
        if directory:
            if name not in self._sizes:
                raise XVAFormatError(IMPORT_ERROR_FAILED_TO_FIND_OBJECT, name)
            return []
        match = _BLOCK_RE.fullmatch(name)
        if match is None:
            raise XVAFormatError.unexpected_file(self._expected(), name)
        ref, number, ext = match.group(1), int(match.group(2)), match.group(3)
        if self._block_name is not None:
            if ext is None or name[: -len(ext)] != self._block_name:
                raise XVAFormatError.unexpected_file(self._block_name + ".xxhash", name)
            if size > 128:
                raise XVAFormatError.bad(f"checksum member {name} is too large")
            self._sum_kind = ext
            self._sum = bytearray()
            return []
        if ext is not None:
            raise XVAFormatError.unexpected_file(self._expected(), name)
        out = []
        if ref != self._ref:
            if ref not in self._sizes:
                raise XVAFormatError(IMPORT_ERROR_FAILED_TO_FIND_OBJECT, ref)
            if ref in self._seen:
                raise XVAFormatError.bad(f"disk {ref} appears twice in the stream")
            out += self._finish_disk()
            self._ref, self._pos, self._last_n, self._first_len = ref, 0, -1, None
            self._seen.add(ref)
        if number <= self._last_n:
            raise XVAFormatError.unexpected_file(f"{ref}/{self._last_n + 1:08d}", name)
        if size > MAX_BLOCK:
            raise XVAFormatError.bad(f"block {name} is larger than {MAX_BLOCK} bytes")
        if self._first_len is None:
            self._first_len = size
        at = self._pos + (number - self._last_n - 1) * self._first_len
        if at + size > self._sizes[ref]:
            raise XVAFormatError.bad(f"block {name} lies beyond the end of disk {ref} "
                                     f"({self._sizes[ref]} bytes)")
        self._block_name, self._block_at, self._last_n = name, at, number
        self._block.clear()
        return out

    def data(self, data: memoryview) -> list[Event]:
        if self._sum_kind is not None:
            self._sum += data
        else:
            self._block += data
        return []

    def end(self) -> list[Event]:
        if self._sum_kind is None:
            return []                               # block complete; wait for its checksum
        kind, self._sum_kind = self._sum_kind, None
        name, self._block_name = self._block_name, None
        out: list[Event] = []
        expected = bytes(self._sum).strip().decode("ascii", "replace").lower()
        actual = checksum_hex(kind, self._block).lower()
        if expected != actual:
            message = f"checksum mismatch for {name}: stream says {expected!r}, data has {actual!r}"
            if not self._force:
                raise XVAFormatError.bad(message)
            out.append(Warning_(message))
        block = bytes(self._block)
        for start, length, zero in zero_spans(self._block_at, block):
            at = self._block_at + start
            out.append(Zeros(self._ref, at, length) if zero
                       else Write(self._ref, at, memoryview(block)[start:start + length]))
        self._pos = self._block_at + len(block)
        return out

    def finish(self) -> list[Event]:
        """The tar ended: no block may wait for its checksum, every disk must be complete."""
        if self._block_name is not None:
            raise XVAFormatError.unexpected_file(self._block_name + ".xxhash", "end of archive")
        out = self._finish_disk()
        missing = sorted(set(self._sizes) - self._seen)
        if missing:
            raise XVAFormatError.bad(f"no data for disk {missing[0]} in the stream")
        return out

    def _finish_disk(self) -> list[Event]:
        if self._ref is None:
            return []
        size = self._sizes[self._ref]
        if self._pos != size:
            raise XVAFormatError.bad(f"disk {self._ref} ends at byte {self._pos} of {size}")
        return [DiskDone(self._ref, size)]

    def _expected(self) -> str:
        if self._ref is not None:
            return f"{self._ref}/{self._last_n + 1:08d}"
        return min(self._sizes, default="end of archive") + "/00000000"
