"""Gzip with isal: members compressed in parallel threads, precomputed zero members, and a
bounded incremental inflater for concatenated members.

A gzip file may hold many members (RFC 1952) and standard gunzip reads them all, so a writer
can cut its input into independent members and compress them on every core (pigz does the
same).  Runs of zeros cost one precomputed member per MiB instead of compression work.

Every member we write carries a size hint, as BGZF does: an extra field (RFC 1952 2.3.1.1,
FLG.FEXTRA) with one subfield ``XS`` whose 4 bytes are the member's total length, header and
trailer included.  gunzip, pigz and zlib skip it; our inflater uses it to cut members out of
the stream without inflating them and to inflate several at once on a small thread pool.
"""

from __future__ import annotations

import collections
import functools
import struct
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from isal import isal_zlib

from .errors import XVAFormatError, XVAUsageError
from .parallel import ParallelCompressor
from .zeros import is_zero

__all__ = ["DEFAULT_LEVEL", "GzipInflater", "ParallelGzip", "gzip_member", "incompressible",
           "stored_member", "stored_size", "zero_gzip"]

DEFAULT_LEVEL = 1             # isal levels are 0-3; 1 is ~10x zlib -6 at a few % more bytes
MEMBER_SIZE = 4 << 20         # raw bytes per parallel member
_ZERO_UNIT = 1 << 20
_WBITS_GZIP = 31

# The size hint: ID1 ID2 CM=8 FLG=FEXTRA, MTIME, XFL, OS, then XLEN=8 and one subfield
# SI1 SI2 = "XS", LEN=4, the member's total length (little-endian, like every gzip field).
_HINT = struct.Struct("<4s6sH2sHI")
_HINT_HEAD = _HINT.size                 # 20: a hinted header, up to the deflate data
_HINT_MAGIC = b"\x1f\x8b\x08\x04"
_HINT_ID = b"XS"
# A hinted member is inflated in one piece only if it is no bigger than the writers make them:
# MEMBER_SIZE raw for the appliance layout, MEMBER_SIZE plus one ~1 MiB tar piece for the
# block layout's whole-stream gzip.  Anything bigger goes through the step-by-step path.
HINT_MAX_OUT = MEMBER_SIZE + (2 << 20)
_HINT_MAX_IN = HINT_MAX_OUT + (HINT_MAX_OUT >> 8) + 4096   # stored blocks: +5 B per 64 KiB
_MIN_MEMBER = _HINT_HEAD + 2 + 8        # header, an empty final block, CRC32 and ISIZE
_TRAILER = struct.Struct("<II")         # CRC32, ISIZE
_HEAD_FIELDS = isal_zlib.compress(b"", 1, _WBITS_GZIP)[4:10]   # MTIME 0, XFL, OS as isal has them
_STORED = 65535                         # the most a stored block holds
_STORED_HEAD = struct.Struct("<BHH")    # BFINAL and BTYPE 00 in one byte, LEN, NLEN
_SAMPLE, _SAMPLES = 4096, 4             # the incompressibility test: 4 samples of 4 KiB


def gzip_member(data: bytes | memoryview | Sequence[bytes | memoryview],
                level: int = DEFAULT_LEVEL) -> bytes:
    """One complete gzip member (header with mtime 0, so output is reproducible), carrying its
    own total length in an ``XS`` extra subfield.  ``data`` is a buffer or a sequence of
    buffers (the pieces of a tar stream: stored members are framed from them, not joined
    first).  Data that does not compress (see :func:`incompressible`) is stored, not
    deflated: deflate's stored blocks cost a copy and a CRC instead of a search that gains
    nothing, and every inflater reads them."""
    views = _views(data)
    if level > 0 and incompressible(views):
        return stored_member(views)
    whole = views[0] if len(views) == 1 else b"".join(views)
    plain = isal_zlib.compress(whole, level, _WBITS_GZIP)   # a 10-byte header, no flags set
    head = _HINT.pack(_HINT_MAGIC, plain[4:10], 8, _HINT_ID, 4, len(plain) + 10)
    return b"".join((head, memoryview(plain)[10:]))


def _views(data) -> list[memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [memoryview(data).cast("B")]
    return [memoryview(piece).cast("B") for piece in data if len(piece)] or [memoryview(b"")]


def stored_member(data: bytes | memoryview | Sequence[bytes | memoryview]) -> bytes:
    """A hinted gzip member holding ``data`` (a buffer, or buffers one after the other) in
    deflate stored blocks (RFC 1951 3.2.4: a block header byte, LEN, NLEN, then the bytes),
    every block full but the last, so its size is :func:`stored_size` of the length alone,
    whatever the bytes are; the CRC32 is isal's.  (zlib's level 0 writes the same blocks at
    the same speed but promises no layout, and a writer that must announce sizes before the
    data needs one.)  The bytes are copied once, into the member."""
    views = _views(data)
    n = sum(len(v) for v in views)
    parts: list[bytes | memoryview] = [
        _HINT.pack(_HINT_MAGIC, _HEAD_FIELDS, 8, _HINT_ID, 4, stored_size(n))]
    crc, done = 0, 0
    block: list[memoryview] = []
    room = _STORED
    for view in views:
        crc = isal_zlib.crc32(view, crc)
        while len(view):
            take = view[:room]
            view = view[len(take):]
            block.append(take)
            room -= len(take)
            if room == 0:
                done += _STORED
                parts.append(_STORED_HEAD.pack(done >= n, _STORED, _STORED ^ 0xFFFF))
                parts += block
                block, room = [], _STORED
    if block or n == 0:
        k = _STORED - room
        parts.append(_STORED_HEAD.pack(1, k, k ^ 0xFFFF))
        parts += block
    parts.append(_TRAILER.pack(crc, n & 0xFFFFFFFF))
    return b"".join(parts)


def stored_size(n: int) -> int:
    """The length of :func:`stored_member` of ``n`` bytes."""
    return _HINT_HEAD + n + _STORED_HEAD.size * max(1, -(-n // _STORED)) + _TRAILER.size


def incompressible(data: bytes | memoryview | Sequence[bytes | memoryview]) -> bool:
    """True when samples spread over ``data`` (a buffer or buffers one after the other) all
    fail to shrink by an eighth under deflate: already compressed or encrypted data
    (packages, media, random).  One sample that shrinks is enough to deflate the whole
    piece, so mixed data keeps its ratio; the test costs about 1 % of deflating the piece."""
    views = _views(data)
    n = sum(len(v) for v in views)
    if n < _SAMPLES * _SAMPLE * 4:
        return False
    for i in range(_SAMPLES):
        sample = _take(views, (2 * i + 1) * n // (2 * _SAMPLES), _SAMPLE)
        if len(isal_zlib.compress(sample, 1, -15)) < len(sample) * 7 // 8:
            return False
    return True


def _take(views: list[memoryview], at: int, n: int) -> bytes | memoryview:
    """``n`` bytes (fewer at the end) from offset ``at`` of the views one after the other."""
    out: list[memoryview] = []
    for view in views:
        if at >= len(view):
            at -= len(view)
            continue
        piece = view[at:at + n]
        out.append(piece)
        n -= len(piece)
        at = 0
        if n == 0:
            break
    return out[0] if len(out) == 1 else b"".join(out)


def _hinted_length(head: bytes) -> int | None:
    """The total length a member's header announces, or None without a plausible hint.  Only
    our own header shape counts (FEXTRA alone, one ``XS`` subfield), so foreign files are
    never guessed at."""
    magic, _, xlen, si, length, total = _HINT.unpack_from(head)
    if magic != _HINT_MAGIC or xlen != 8 or si != _HINT_ID or length != 4:
        return None
    return total if _MIN_MEMBER <= total <= _HINT_MAX_IN else None


def _inflate_member(member: bytes | bytearray, size: int) -> bytes:
    """Inflate one whole hinted member that says it holds ``size`` bytes (ISIZE).  Output is
    capped at ``size + 1``: a member that holds more, ends before or after the hinted length,
    or fails its CRC is refused, so a lying hint costs at most one member's worth of work."""
    d = isal_zlib.decompressobj(_WBITS_GZIP)
    try:
        out = d.decompress(member, size + 1)
    except isal_zlib.error as e:
        raise XVAFormatError.bad(f"corrupt gzip data: {e}") from None
    if not d.eof or d.unused_data or d.unconsumed_tail or len(out) != size:
        raise XVAFormatError.bad("corrupt gzip data: a member does not match its size hint")
    return out


@functools.lru_cache(maxsize=64)
def _zero_member(length: int, level: int) -> bytes:
    return gzip_member(bytes(length), level)


def zero_gzip(length: int, level: int = DEFAULT_LEVEL) -> bytes:
    """Gzip members for ``length`` zero bytes, built from one cached 1 MiB zero member."""
    units, rest = divmod(length, _ZERO_UNIT)
    out = _zero_member(_ZERO_UNIT, level) * units
    return out + _zero_member(rest, level) if rest else out


class ParallelGzip(ParallelCompressor):
    """Gzip members (:func:`gzip_member`) made on a thread pool, in order; see
    :class:`~xva.parallel.ParallelCompressor`."""

    unit = staticmethod(gzip_member)
    default_level = DEFAULT_LEVEL
    name = "xva-gzip"


class GzipInflater:
    """Inflate concatenated gzip members fed in pieces of any size.

    Output comes in pieces of at most ``step`` bytes, so a gzip bomb cannot grow past what the
    caller's size check allows.  A member whose exact bytes repeat the last small all-zero
    member is not inflated again: it is reported as a zero run, which makes the zero spans of
    a sparse export nearly free to import.

    Members with a size hint (see the module doc) and ``parallel`` set are cut out whole and
    inflated up to ``depth`` at a time on ``threads`` threads (isal releases the GIL); their
    output keeps its order and is still handed out ``step`` bytes at a time.  Such a member is
    inflated in one piece only if its ISIZE is at most :data:`HINT_MAX_OUT` and, with
    ``limit``, keeps the total output within ``limit``; otherwise, and for members without a
    hint (gzip, pigz, xapi), it goes through the step-by-step path.  Output is held back only
    while a member is incomplete, i.e. while more input must come; at a member boundary at
    the end of a :meth:`feed` everything is handed out and the threads are stopped."""

    _MAX_REMEMBERED = 64 * 1024

    def __init__(self, step: int = 1 << 20, *, limit: int | None = None,
                 parallel: bool = True, threads: int = 2, depth: int | None = None) -> None:
        if step < 1 or threads < 1 or (depth is not None and depth < 1):
            raise XVAUsageError("bad gzip inflater limits")
        self.step = step
        self.limit = limit
        self.parallel = parallel                # use size hints at the next member start
        self._threads = threads
        self._depth = depth or threads + 1      # whole members in flight (~4+4 MiB each)
        self._pool: ThreadPoolExecutor | None = None
        # Output in order: (future of a whole member's bytes, n) or (None, n) for zeros.
        self._queue: collections.deque[tuple[Future[bytes] | None, int]] = collections.deque()
        self._inflight = 0                      # futures in the queue
        self._member: bytearray | None = None   # a hinted member being collected, of
        self._have = 0                          # which this many bytes are in
        self._no_hint = False                   # the next member goes step by step
        self._total = 0                         # output produced or queued so far
        self._d = None                          # decompressobj of the current member
        self._carry = b""                       # partial input at a member start
        self._raw: bytearray | None = None      # compressed bytes of the current member
        self._fed = 0                           # input bytes given to the current member
        self._all_zero = True
        self._out = 0
        self._zero_member = b""
        self._zero_len = 0
        self.members = 0

    @property
    def at_boundary(self) -> bool:
        """True between members: the input so far is complete gzip."""
        return self._d is None and not self._carry and self._member is None

    def feed(self, data: bytes | memoryview
             ) -> Iterator[tuple[bytes | memoryview | None, int]]:
        """Yield ``(data, n)`` output pieces (bytes, or a memoryview of a member inflated
        whole), or ``(None, n)`` for ``n`` zero bytes."""
        try:
            yield from self._feed(data)
            if self.at_boundary:                # nothing more is owed: hand everything out
                yield from self._ready(drain=True)
                self._stop()
            else:
                yield from self._ready()
        except BaseException:                   # an error, or the caller stopped: no threads
            self._stop()
            raise

    def _feed(self, data: bytes | memoryview
              ) -> Iterator[tuple[bytes | memoryview | None, int]]:
        buf = self._carry + bytes(data) if self._carry else memoryview(data).cast("B")
        self._carry = b""
        while len(buf):
            if self._member is not None:
                buf = yield from self._collect(buf)
                continue
            if self._d is None:
                zm = self._zero_member
                if zm:
                    runs = 0
                    while buf[len(zm) * runs: len(zm) * (runs + 1)] == zm:
                        runs += 1
                    if runs:
                        self.members += runs
                        self._total += self._zero_len * runs
                        if self._queue:
                            self._queue.append((None, self._zero_len * runs))
                        else:
                            yield None, self._zero_len * runs
                        buf = buf[len(zm) * runs:]
                        continue
                    if len(buf) < len(zm) and zm[: len(buf)] == buf:
                        self._carry = bytes(buf)
                        return
                if buf[0] != 0x1F:
                    raise XVAFormatError.bad("data after the end of a gzip stream is not gzip")
                if self.parallel and not self._no_hint:
                    if len(buf) < _HINT_HEAD and _HINT_MAGIC.startswith(buf[:4]):
                        self._carry = bytes(buf)    # a member is longer: more must come
                        return
                    total = _hinted_length(buf) if len(buf) >= _HINT_HEAD else None
                    if total is not None and total > self._MAX_REMEMBERED:
                        self._member, self._have = bytearray(total), 0
                        continue
                self._no_hint = False
                yield from self._ready(drain=True)  # step-by-step output comes after those
                self._d = isal_zlib.decompressobj(_WBITS_GZIP)
                self._raw, self._all_zero, self._out, self._fed = bytearray(), True, 0, 0
            yield from self._inflate(buf)
            buf = self._d.unused_data if self._d.eof else b""
            if self._d.eof:
                self._member_end(buf)

    def _collect(self, buf: bytes | memoryview
                 ) -> Iterator[tuple[bytes | memoryview | None, int]]:
        """Add input to the hinted member being collected; once whole, queue it.  Returns
        the input left over (a view: no copy of the rest of a large piece per member)."""
        member, have = self._member, self._have
        take = min(len(buf), len(member) - have)
        member[have:have + take] = memoryview(buf)[:take]
        self._have = have + take
        if self._have < len(member):
            return b""
        rest, self._member = memoryview(buf)[take:], None
        size = int.from_bytes(member[-4:], "little")
        if size > HINT_MAX_OUT or (self.limit is not None and self._total + size > self.limit):
            self._no_hint = True                # too big to inflate in one piece: step by step
            return bytes(member) + rest
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="xva-inflate")
        self._queue.append((self._pool.submit(_inflate_member, member, size), size))
        self._inflight += 1
        self._total += size
        self.members += 1
        yield from self._ready(block=self._inflight > self._depth)
        return rest

    def _ready(self, block: bool = False, drain: bool = False
               ) -> Iterator[tuple[bytes | memoryview | None, int]]:
        """Hand out queued output in order: what is done, or (``block``) until the number in
        flight is back within the depth, or (``drain``) everything."""
        while self._queue:
            future, n = self._queue[0]
            if future is not None:
                if not (drain or block or future.done()):
                    return
                out = future.result()
                self._inflight -= 1
                block = self._inflight > self._depth
            self._queue.popleft()
            if future is None:
                yield None, n
            elif n <= self.step:
                yield out, n
            else:
                view = memoryview(out)
                for i in range(0, n, self.step):
                    piece = view[i:i + self.step]
                    yield piece, len(piece)

    def _stop(self) -> None:
        for future, _ in self._queue:
            if future is not None:
                future.cancel()
        self._queue.clear()
        self._inflight = 0
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)

    def _inflate(self, buf: bytes | memoryview) -> Iterator[tuple[bytes, int]]:
        d = self._d
        if self._raw is not None:                   # keep the member's first bytes only
            self._raw += buf[: self._MAX_REMEMBERED + 1 - len(self._raw)]
            self._fed += len(buf)
        tail = buf
        while True:
            try:
                out = d.decompress(tail, self.step)
            except isal_zlib.error as e:
                raise XVAFormatError.bad(f"corrupt gzip data: {e}") from None
            if out:
                self._out += len(out)
                self._total += len(out)
                if self._all_zero and self._raw is not None and not is_zero(out):
                    self._all_zero = False
                yield out, len(out)
            if d.eof:
                return
            tail = d.unconsumed_tail
            if not tail and len(out) < self.step:
                return

    def _member_end(self, unused: bytes) -> None:
        self.members += 1
        size = self._fed - len(unused)              # compressed bytes of this member
        if self._all_zero and self._raw is not None and self._out and \
                size <= self._MAX_REMEMBERED:
            self._zero_member = bytes(self._raw[:size])
            self._zero_len = self._out
        self._d = None
        self._raw = None

    def close(self) -> None:
        """End of the gzip data: a member cut short is a premature EOF.  Stops the threads."""
        self._stop()
        if not self.at_boundary:
            raise XVAFormatError.premature_eof()
