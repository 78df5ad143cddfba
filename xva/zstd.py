"""Zstandard for whole-stream XVAs (what xapi writes for ``use_compression=zstd``): a bounded
incremental inflater for concatenated frames, and the writer's frames, made on every core.

libzstd (through ``zstandard``) does all the decoding.  But ``decompressobj().decompress()``
returns everything a piece of input inflates to, and one 4-byte zstd block may stand for
128 KiB, so a hostile upload of a few KiB could ask for gigabytes in a single call.  The
inflater therefore follows the frame layout of RFC 8878 — frame header, 3-byte block headers,
optional checksum, skippable frames (pzstd writes them) — only to decide where to cut: libzstd
gets at most ``step // 128 KiB`` blocks per call, and no block inflates to more than 128 KiB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import zstandard

from .errors import XVAFormatError, XVAUsageError
from .gz import incompressible
from .parallel import ParallelCompressor

__all__ = ["BLOCK_MAX", "DEFAULT_LEVEL", "MAX_WINDOW", "STREAM_MAGICS", "ZSTD_MAGIC",
           "ParallelZstd", "ZstdInflater", "zstd_frame"]

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE = 0x184D2A50       # to 0x184D2A5F: frames to skip, whatever they hold
# What a zstd stream starts with: a frame, or a skippable one (pzstd starts with one).
STREAM_MAGICS = (ZSTD_MAGIC, *((_SKIPPABLE + i).to_bytes(4, "little") for i in range(16)))
DEFAULT_LEVEL = 3             # zstd's own default: a better ratio than gzip -6, many times faster
_FASTEST = -(1 << 17)         # ZSTD_minCLevel(): libzstd's fastest level
# The largest window (history) a frame may ask the decoder to keep: libzstd's own default
# limit, i.e. what `zstd -d` reads without --memory (and so what xapi, which pipes through
# zstd, reads).  Every level up to 19 and --long fit; --long=31 and --ultra -22 are refused
# with a clear error instead of costing up to 2 GiB of memory per import.
MAX_WINDOW = 1 << 27
BLOCK_MAX = 128 << 10         # RFC 8878: no block holds or inflates to more than 128 KiB

# Parser states, each named for what its next ``need`` bytes are, and the legal moves.
_MAGIC, _DESCRIPTOR, _HEADER, _BLOCK_HEADER, _BLOCK, _CHECKSUM, _SKIP_SIZE, _SKIP = (
    "magic", "frame header descriptor", "frame header", "block header", "block",
    "checksum", "skippable size", "skippable data")
_TRANSITIONS = {
    _MAGIC: {_DESCRIPTOR, _SKIP_SIZE},
    _DESCRIPTOR: {_HEADER},
    _HEADER: {_BLOCK_HEADER},
    _BLOCK_HEADER: {_BLOCK, _BLOCK_HEADER, _CHECKSUM, _MAGIC},
    _BLOCK: {_BLOCK_HEADER, _CHECKSUM, _MAGIC},
    _CHECKSUM: {_MAGIC},
    _SKIP_SIZE: {_SKIP, _MAGIC},
    _SKIP: {_MAGIC},
}
_SMALL = {_MAGIC, _DESCRIPTOR, _HEADER, _BLOCK_HEADER, _CHECKSUM, _SKIP_SIZE}  # parsed here
_FCS_SIZE = (0, 2, 4, 8)      # by Frame_Content_Size_flag (0 is 1 byte for single-segment)
_DICT_ID_SIZE = (0, 1, 2, 4)


_local = threading.local()


def zstd_frame(data: bytes | memoryview | Sequence[bytes | memoryview],
               level: int = DEFAULT_LEVEL) -> bytes:
    """One complete zstd frame of ``data`` (a buffer or buffers one after the other) with
    its content size and checksum, as the zstd CLI writes them.  Data that does not compress
    (the sample test gzip uses, :func:`~xva.gz.incompressible`) goes through libzstd's
    fastest level instead: raw blocks as level 3 would write them, at half the CPU, as it
    hardly searches for matches.  One compressor per thread and level."""
    if level > 0 and incompressible(data):
        level = _FASTEST
    cctxs = getattr(_local, "cctxs", None)
    if cctxs is None:
        cctxs = _local.cctxs = {}
    cctx = cctxs.get(level)
    if cctx is None:
        cctx = cctxs[level] = zstandard.ZstdCompressor(level=level, write_checksum=True,
                                                       write_content_size=True)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        data = b"".join(data)               # pieces of a tar stream: joined here, on a worker
    return cctx.compress(data)


class ParallelZstd(ParallelCompressor):
    """Zstd frames (:func:`zstd_frame`) made on a thread pool, in order: a stream of
    concatenated frames, which ``zstd -d``, xapi and :class:`ZstdInflater` all read."""

    unit = staticmethod(zstd_frame)
    default_level = DEFAULT_LEVEL
    name = "xva-zstd"


class ZstdInflater:
    """Inflate concatenated zstd frames (and skip skippable ones) fed in pieces of any size.

    Yields ``(bytes, n)`` pieces of at most ``step`` bytes, as :class:`~xva.gz.GzipInflater`
    does, and holds at most ``max(step, 128 KiB)`` of output at a time, so a zstd bomb costs
    no more than a step before the caller's size checks refuse it.  Frames that need a window
    above ``max_window`` bytes or a dictionary are refused; libzstd verifies the checksums."""

    def __init__(self, step: int = 1 << 20, max_window: int = MAX_WINDOW) -> None:
        if step < 1 or max_window < 1 << 10:
            raise XVAUsageError("bad zstd inflater limits")
        self.step, self.max_window = step, max_window
        self._dctx = zstandard.ZstdDecompressor(max_window_size=max_window)
        self._obj = None                    # decompressobj of the current frame
        self._per_call = max(1, step // BLOCK_MAX)
        self._state, self._need = _MAGIC, 4
        self._head = bytearray()            # the small unit being collected
        self._pending: list[bytes | memoryview] = []   # frame bytes not yet given to libzstd
        self._blocks = 0                    # blocks with bytes in _pending (or half given)
        self._descriptor = 0
        self._checksum = False
        self._last = False
        self.frames = 0
        self.bytes_out = 0

    @property
    def at_boundary(self) -> bool:
        """True between frames: the input so far is complete zstd."""
        return self._state == _MAGIC and not self._head

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
        """Yield ``(bytes, n)`` output pieces; the input must stay unchanged until done."""
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            take = min(self._need, len(view) - pos)
            piece = view[pos:pos + take]
            pos += take
            self._need -= take
            if self._state in _SMALL:
                self._head += piece
            elif self._state == _BLOCK:
                self._pending.append(piece)
            if not self._need:
                yield from self._unit()
        yield from self._inflate()

    def close(self) -> None:
        """End of the zstd data: a frame cut short is a premature EOF."""
        if not self.at_boundary:
            raise XVAFormatError.premature_eof()

    def _goto(self, state: str, need: int) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise XVAUsageError(f"zstd parser: cannot go from {self._state} to {state}")
        self._state, self._need = state, need

    def _unit(self) -> Iterator[tuple[bytes, int]]:
        """The current unit (``need`` bytes of ``state``) is complete: act on it."""
        state, unit = self._state, bytes(self._head)
        self._head.clear()
        if state == _MAGIC:
            self._frame_start(unit)
        elif state == _DESCRIPTOR:
            self._pending.append(unit)
            self._frame_descriptor(unit[0])
        elif state == _HEADER:
            self._pending.append(unit)
            self._frame_header(unit)
        elif state == _BLOCK_HEADER:
            if self._blocks >= self._per_call:
                yield from self._inflate()
            self._pending.append(unit)
            self._blocks += 1
            yield from self._block_header(int.from_bytes(unit, "little"))
        elif state == _BLOCK:
            yield from self._block_end()
        elif state == _CHECKSUM:
            self._pending.append(unit)
            yield from self._frame_end()
        elif state == _SKIP_SIZE:
            size = int.from_bytes(unit, "little")
            if size:
                self._goto(_SKIP, size)
            else:
                self._goto(_MAGIC, 4)
        elif state == _SKIP:
            self._goto(_MAGIC, 4)

    def _frame_start(self, magic: bytes) -> None:
        if magic == ZSTD_MAGIC:
            self._obj = self._dctx.decompressobj(write_size=self._per_call * BLOCK_MAX)
            self._pending.append(magic)
            self._goto(_DESCRIPTOR, 1)
        elif int.from_bytes(magic, "little") & ~0xF == _SKIPPABLE:
            self._goto(_SKIP_SIZE, 4)
        else:
            what = "after the end of a zstd frame" if self.frames else "at the start"
            raise XVAFormatError.bad(f"data {what} is not zstd")

    def _frame_descriptor(self, fhd: int) -> None:
        if fhd & 0x08:
            raise XVAFormatError.bad("corrupt zstd data: reserved bit set in a frame header")
        self._descriptor, self._checksum = fhd, bool(fhd & 0x04)
        single = bool(fhd & 0x20)
        fcs = _FCS_SIZE[fhd >> 6] or int(single)
        self._goto(_HEADER, int(not single) + _DICT_ID_SIZE[fhd & 3] + fcs)

    def _frame_header(self, rest: bytes) -> None:
        fhd = self._descriptor
        if fhd & 0x20:                          # single segment: the window is the content
            dict_at, window = 0, None
        else:
            exponent, mantissa = rest[0] >> 3, rest[0] & 7
            base = 1 << (10 + exponent)
            dict_at, window = 1, base + (base >> 3) * mantissa
        dict_end = dict_at + _DICT_ID_SIZE[fhd & 3]
        if int.from_bytes(rest[dict_at:dict_end], "little"):
            raise XVAFormatError.bad("zstd frames that need a dictionary are not supported")
        if window is None:
            window = int.from_bytes(rest[dict_end:], "little") + (256 if fhd >> 6 == 1 else 0)
        if window > self.max_window:
            raise XVAFormatError.bad(
                f"a zstd frame asks for a {window >> 20} MiB window, above the "
                f"{self.max_window >> 20} MiB allowed (written with zstd --long=31 or "
                f"--ultra?): recompress it without")
        self._goto(_BLOCK_HEADER, 3)

    def _block_header(self, header: int) -> Iterator[tuple[bytes, int]]:
        self._last, kind, size = bool(header & 1), (header >> 1) & 3, header >> 3
        if kind == 3:
            raise XVAFormatError.bad("corrupt zstd data: reserved block type")
        if size > BLOCK_MAX:
            raise XVAFormatError.bad("corrupt zstd data: a block above 128 KiB")
        body = 1 if kind == 1 else size         # an RLE block is one byte, repeated
        if body:
            self._goto(_BLOCK, body)
        else:
            yield from self._block_end()

    def _block_end(self) -> Iterator[tuple[bytes, int]]:
        if not self._last:
            self._goto(_BLOCK_HEADER, 3)
        elif self._checksum:
            self._goto(_CHECKSUM, 4)
        else:
            yield from self._frame_end()

    def _frame_end(self) -> Iterator[tuple[bytes, int]]:
        yield from self._inflate()
        if not self._obj.eof or self._obj.unused_data:
            raise XVAFormatError.bad("corrupt zstd data: the frame does not end where its "
                                     "last block says")
        self._obj = None
        self.frames += 1
        self._goto(_MAGIC, 4)

    def _inflate(self) -> Iterator[tuple[bytes, int]]:
        """Give libzstd the pending frame bytes: at most ``_per_call`` blocks' worth."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._blocks = int(self._state == _BLOCK and self._need > 0)   # half given to libzstd
        try:
            out = self._obj.decompress(data)
        except zstandard.ZstdError as e:
            raise XVAFormatError.bad(f"corrupt zstd data: {e}") from None
        self.bytes_out += len(out)
        if len(out) <= self.step:
            if out:
                yield out, len(out)
            return
        for i in range(0, len(out), self.step):
            piece = out[i:i + self.step]
            yield piece, len(piece)
