"""Dynamic VHD (Microsoft's Virtual Hard Disk format, as xapi, Xen Orchestra and `qemu-img -f vpc`
read it), streamed both ways, sans-IO.

Layout written: footer copy (512 B), dynamic header (1024 B), the block allocation table (one
big-endian u32 sector offset per 2 MiB block, 0xFFFFFFFF for none, padded to a sector), then each
allocated block in disk order (a 512 B sector bitmap, then 2 MiB of data), then the footer. Only
allocated blocks are written, so the cost follows the data. Every number is big-endian; footer
and header carry a one's-complement checksum of their bytes.

:class:`VhdWriter` turns (disk size, allocated blocks) into the byte pieces of a stream;
:class:`VhdReader` is fed bytes and returns :class:`~xva.events.Write` events (and a final
:class:`~xva.events.DiskDone`), checking everything a hostile stream could get wrong: cookies,
checksums, a BAT that points backwards, past the stream or outside the disk, a disk larger than
the target, a truncated stream. Reads must arrive in offset order (as every VHD streamer writes
them); a block out of order is refused rather than buffered.
"""

from __future__ import annotations

import struct
import time
import uuid as _uuid
from dataclasses import dataclass
from typing import Iterable, Iterator

from .errors import XVAFormatError, XVAUsageError
from .events import DiskDone, Event, Write

__all__ = ["BLOCK_SIZE", "VhdWriter", "VhdReader", "vhd_size", "geometry"]

SECTOR = 512
BLOCK_SIZE = 2 * 1024 * 1024
_BITMAP = SECTOR                             # 2 MiB / 512 B = 4096 sectors = 512 bytes of bits
_UNUSED = 0xFFFFFFFF
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
_HEADER = struct.Struct(">8sQQIIII16sI4x512s192s256x")
_EPOCH_2000 = 946684800
_DYNAMIC = 3
_MAX_SIZE = 2040 * 2**30                     # the format's limit (2 TiB - 8 GiB), as xapi's


def _checksum(data: bytes) -> int:
    return ~sum(data) & 0xFFFFFFFF


def geometry(size: int) -> tuple[int, int, int]:
    """Cylinders, heads, sectors per track for `size` bytes (the VHD specification's rule)."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max(4, (cth + 1023) // 1024)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def _footer(size: int, unique: bytes, stamp: int) -> bytes:
    c, h, s = geometry(size)
    fields = [b"conectix", 2, 0x00010000, SECTOR, stamp, b"tap\0", 0x00010003, b"Lnx ",
              size, size, c, h, s, _DYNAMIC, 0, unique, 0]
    raw = _FOOTER.pack(*fields)
    fields[14] = _checksum(raw)
    return _FOOTER.pack(*fields)


def _header(entries: int) -> bytes:
    fields = [b"cxsparse", 0xFFFFFFFFFFFFFFFF, 3 * SECTOR, 0x00010000, entries, BLOCK_SIZE, 0,
              bytes(16), 0, bytes(512), bytes(192)]
    raw = _HEADER.pack(*fields)
    fields[6] = _checksum(raw)
    return _HEADER.pack(*fields)


def _bat_bytes(entries: int) -> int:
    return -(-entries * 4 // SECTOR) * SECTOR


def vhd_size(size: int, blocks: int) -> int:
    """The stream's length for a disk of `size` bytes with `blocks` allocated blocks."""
    entries = -(-size // BLOCK_SIZE)
    return 3 * SECTOR + _bat_bytes(entries) + blocks * (_BITMAP + BLOCK_SIZE) + SECTOR


class VhdWriter:
    """A dynamic VHD of a `size`-byte disk whose allocated blocks are `blocks` (indices, any
    order). `stream(read)` yields the pieces; `read(offset, length)` returns that much of the
    disk (short at its end: the rest is zeros)."""

    def __init__(self, size: int, blocks: Iterable[int]) -> None:
        if size < 0 or size > _MAX_SIZE:
            raise XVAUsageError(f"a VHD holds 0 to {_MAX_SIZE} bytes, not {size}")
        self.size = size
        self.entries = -(-size // BLOCK_SIZE)
        self.blocks = sorted(set(blocks))
        if self.blocks and (self.blocks[0] < 0 or self.blocks[-1] >= self.entries):
            raise XVAUsageError("a block outside the disk")
        self.total = vhd_size(size, len(self.blocks))
        self._footer = _footer(size, _uuid.uuid4().bytes, int(time.time()) - _EPOCH_2000)

    def stream(self, read, piece: int = BLOCK_SIZE) -> Iterator[bytes]:
        bat = [_UNUSED] * self.entries
        sector = (3 * SECTOR + _bat_bytes(self.entries)) // SECTOR
        for b in self.blocks:
            bat[b] = sector
            sector += (_BITMAP + BLOCK_SIZE) // SECTOR
        table = struct.pack(f">{self.entries}I", *bat)
        yield self._footer + _header(self.entries) + table + bytes(_bat_bytes(self.entries)
                                                                   - len(table))
        bitmap = b"\xff" * _BITMAP
        for b in self.blocks:
            start = b * BLOCK_SIZE
            for off in range(start, start + BLOCK_SIZE, piece):
                n = min(piece, start + BLOCK_SIZE - off)
                data = read(off, max(0, min(n, self.size - off))) if off < self.size else b""
                if len(data) < n:
                    data += bytes(n - len(data))
                # the bitmap goes with the block's first piece: one piece per block by default
                yield bitmap + data if off == start else data
        yield self._footer


@dataclass(frozen=True)
class _Header:
    entries: int
    block: int
    bat_offset: int


class VhdReader:
    """Feed a dynamic VHD stream; `feed(data)` returns events, `close()` checks that
    it ended where it should. `disk` names the target in the events; `limit` is the target's
    size (a VHD of a larger disk is refused)."""

    def __init__(self, disk: str, limit: int) -> None:
        self.disk, self.limit = disk, limit
        self._buf = bytearray()
        self._pos = 0                  # stream offset of _buf[0]
        self._phase = "footer"
        self._header: _Header | None = None
        self._plan: list[tuple[int, int]] = []      # (stream offset, block index), in order
        self._next = 0
        self.size = 0
        self.bytes_written = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        self._buf += data
        out: list[Event] = []
        while self._step(out):
            pass
        return out

    def close(self) -> list[Event]:
        if self._phase == "blocks" and self._next == len(self._plan):
            return [DiskDone(self.disk, self.size)]
        raise XVAFormatError.premature_eof()

    # -- parsing ------------------------------------------------------------------------------
    def _take(self, n: int) -> bytes | None:
        if len(self._buf) < n:
            return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        self._pos += n
        return data

    def _skip_to(self, offset: int) -> bool:
        if offset < self._pos:
            raise XVAFormatError.bad("VHD: a block is out of order (offsets must grow)")
        n = min(offset - self._pos, len(self._buf))
        del self._buf[:n]
        self._pos += n
        return self._pos == offset

    def _step(self, out: list[Event]) -> bool:
        if self._phase == "footer":
            raw = self._take(SECTOR)
            if raw is None:
                return False
            self._on_footer(raw)
            return True
        if self._phase == "header":
            if not self._skip_to(SECTOR):
                return False
            raw = self._take(1024)
            if raw is None:
                return False
            self._on_header(raw)
            return True
        if self._phase == "bat":
            h = self._header
            if not self._skip_to(h.bat_offset):
                return False
            raw = self._take(h.entries * 4)
            if raw is None:
                return False
            self._on_bat(raw)
            return True
        if self._phase == "blocks":
            if self._next == len(self._plan):
                self._buf.clear()                # the footer copy and padding after it
                return False
            offset, block = self._plan[self._next]
            if not self._skip_to(offset):
                return False
            h = self._header
            raw = self._take(_BITMAP + h.block)
            if raw is None:
                return False
            self._next += 1
            self._on_block(block, raw, out)
            return True
        return False

    @staticmethod
    def _unpack(layout: struct.Struct, raw: bytes, cookie: bytes, at: int, what: str) -> tuple:
        """`raw` as `layout`, its cookie and its checksum (the u32 at `at`) checked."""
        fields = layout.unpack(raw)
        if fields[0] != cookie:
            raise XVAFormatError.bad(f"VHD: no {what} cookie (not a VHD)")
        if _checksum(raw[:at] + bytes(4) + raw[at + 4:]) != struct.unpack_from(">I", raw, at)[0]:
            raise XVAFormatError.bad(f"VHD: {what} checksum mismatch")
        return fields

    def _on_footer(self, raw: bytes) -> None:
        f = self._unpack(_FOOTER, raw, b"conectix", 64, "footer")
        size, kind = f[9], f[13]
        if size > self.limit:
            raise XVAFormatError.bad(f"VHD: a {size}-byte disk does not fit a {self.limit}-byte"
                                     " VDI")
        self.size = size
        if kind != _DYNAMIC:                  # a fixed VHD has its footer last: no stream
            raise XVAFormatError.bad(f"VHD: disk type {kind} (only dynamic VHDs stream)")
        if f[3] != SECTOR:
            raise XVAFormatError.bad("VHD: the dynamic header must follow the footer")
        self._phase = "header"

    def _on_header(self, raw: bytes) -> None:
        h = self._unpack(_HEADER, raw, b"cxsparse", 36, "dynamic header")
        entries, block, bat = h[4], h[5], h[2]
        if block != BLOCK_SIZE:
            raise XVAFormatError.bad(f"VHD: block size {block} (2 MiB expected)")
        if entries != -(-self.size // block):
            raise XVAFormatError.bad(f"VHD: {entries} BAT entries for a {self.size}-byte disk")
        if h[7] != bytes(16):
            raise XVAFormatError.bad("VHD: a differencing disk needs its parent (unsupported)")
        if bat < 3 * SECTOR or bat % SECTOR:
            raise XVAFormatError.bad("VHD: the BAT overlaps the headers")
        self._header = _Header(entries, block, bat)
        self._phase = "bat"

    def _on_bat(self, raw: bytes) -> None:
        h = self._header
        bat = struct.unpack(f">{h.entries}I", raw)
        end_of_bat = h.bat_offset + _bat_bytes(h.entries)
        plan = sorted((sector * SECTOR, i) for i, sector in enumerate(bat) if sector != _UNUSED)
        last = end_of_bat
        for offset, _ in plan:
            if offset < last:
                raise XVAFormatError.bad("VHD: BAT entries overlap each other or the headers")
            last = offset + _BITMAP + h.block
        self._plan = plan
        self._phase = "blocks"

    def _on_block(self, block: int, raw: bytes, out: list[Event]) -> None:
        bitmap = raw[:_BITMAP]
        start = block * self._header.block
        data = memoryview(raw)[_BITMAP:]
        run = None
        for s in range(self._header.block // SECTOR):
            present = bitmap[s >> 3] & (0x80 >> (s & 7))
            pos = start + s * SECTOR
            if present and pos < self.size:
                run = run if run is not None else s
                continue
            if run is not None:
                self._emit(start + run * SECTOR, data[run * SECTOR:s * SECTOR], out)
                run = None
        if run is not None:
            end = min(self._header.block, self.size - start)
            self._emit(start + run * SECTOR, data[run * SECTOR:end], out)

    def _emit(self, offset: int, data: memoryview, out: list[Event]) -> None:
        if len(data):
            out.append(Write(self.disk, offset, bytes(data)))
            self.bytes_written += len(data)
