"""Gzip with isal: members compressed in parallel threads, precomputed zero members, and a
bounded incremental inflater for concatenated members.

A gzip file may hold many members (RFC 1952) and standard gunzip reads them all, so a writer
can cut its input into independent members and compress them on every core (pigz does the
same).  Runs of zeros cost one precomputed member per MiB instead of compression work.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from isal import isal_zlib

from .errors import XVAFormatError, XVAUsageError
from .zeros import is_zero

__all__ = ["DEFAULT_LEVEL", "GzipInflater", "ParallelGzip", "gzip_member", "zero_gzip"]

DEFAULT_LEVEL = 1             # isal levels are 0-3; 1 is ~10x zlib -6 at a few % more bytes
MEMBER_SIZE = 4 << 20         # raw bytes per parallel member
_ZERO_UNIT = 1 << 20
_WBITS_GZIP = 31


def gzip_member(data: bytes | memoryview, level: int = DEFAULT_LEVEL) -> bytes:
    """One complete gzip member (header with mtime 0, so output is reproducible)."""
    return isal_zlib.compress(data, level, _WBITS_GZIP)


@functools.lru_cache(maxsize=64)
def _zero_member(length: int, level: int) -> bytes:
    return gzip_member(bytes(length), level)


def zero_gzip(length: int, level: int = DEFAULT_LEVEL) -> bytes:
    """Gzip members for ``length`` zero bytes, built from one cached 1 MiB zero member."""
    units, rest = divmod(length, _ZERO_UNIT)
    out = _zero_member(_ZERO_UNIT, level) * units
    return out + _zero_member(rest, level) if rest else out


class ParallelGzip:
    """Compress pieces into gzip members on a thread pool; outputs come back in order.

    At most ``depth`` pieces are in flight, which bounds memory: :meth:`submit` blocks on the
    oldest piece when the window is full.  :meth:`close` cancels what is queued."""

    def __init__(self, level: int = DEFAULT_LEVEL, threads: int = 2,
                 executor: Executor | None = None, depth: int | None = None) -> None:
        self.level = level
        self._own = executor is None
        self._pool = executor or ThreadPoolExecutor(threads, thread_name_prefix="xva-gzip")
        self._depth = depth or 2 * threads + 2
        self._queue: collections.deque[Future[bytes] | bytes] = collections.deque()
        self._closed = False

    def submit(self, data: bytes | memoryview) -> list[bytes]:
        """Queue ``data`` (not modified until its member is out) and return ready outputs."""
        self._check()
        self._queue.append(self._pool.submit(gzip_member, data, self.level))
        return self._ready(block=len(self._queue) > self._depth)

    def submit_ready(self, member: bytes) -> list[bytes]:
        """Queue already-compressed bytes (e.g. a zero run) in their place in the order."""
        self._check()
        self._queue.append(member)
        return self._ready(block=False)

    def drain(self) -> list[bytes]:
        """Wait for every queued piece and return all outputs in order."""
        self._check()
        out = []
        while self._queue:
            item = self._queue.popleft()
            out.append(item if isinstance(item, bytes) else item.result())
        return out

    def close(self) -> None:
        """Drop queued work and (if the pool is ours) stop the threads; safe to call twice."""
        self._closed = True
        for item in self._queue:
            if not isinstance(item, bytes):
                item.cancel()
        self._queue.clear()
        if self._own:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _ready(self, block: bool) -> list[bytes]:
        out = []
        while self._queue:
            item = self._queue[0]
            if not isinstance(item, bytes):
                if not (block or item.done()):
                    break
                item = item.result()
                block = len(self._queue) - 1 > self._depth
            out.append(item)
            self._queue.popleft()
        return out

    def _check(self) -> None:
        if self._closed:
            raise XVAUsageError("the compressor is closed")


class GzipInflater:
    """Inflate concatenated gzip members fed in pieces of any size.

    Output comes in pieces of at most ``step`` bytes per inflate call, so a gzip bomb cannot
    allocate more than that before the caller's size check refuses it.  A member whose exact
    bytes repeat the last small all-zero member is not inflated again: it is reported as a
    zero run, which makes the zero spans of a sparse export nearly free to import."""

    _MAX_REMEMBERED = 64 * 1024

    def __init__(self, step: int = 1 << 20) -> None:
        self.step = step
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
        return self._d is None and not self._carry

    def feed(self, data: bytes | memoryview) -> Iterator[tuple[bytes | None, int]]:
        """Yield ``(bytes, n)`` output pieces, or ``(None, n)`` for ``n`` zero bytes."""
        buf = self._carry + bytes(data)       # bytes: fast compares and slices below
        self._carry = b""
        while len(buf):
            if self._d is None:
                zm = self._zero_member
                if zm:
                    runs = 0
                    while buf[len(zm) * runs: len(zm) * (runs + 1)] == zm:
                        runs += 1
                    if runs:
                        self.members += runs
                        yield None, self._zero_len * runs
                        buf = buf[len(zm) * runs:]
                        continue
                    if len(buf) < len(zm) and zm[: len(buf)] == buf:
                        self._carry = bytes(buf)
                        return
                if buf[0] != 0x1F:
                    raise XVAFormatError.bad("data after the end of a gzip stream is not gzip")
                self._d = isal_zlib.decompressobj(_WBITS_GZIP)
                self._raw, self._all_zero, self._out, self._fed = bytearray(), True, 0, 0
            yield from self._inflate(buf)
            buf = self._d.unused_data if self._d.eof else b""
            if self._d.eof:
                self._member_end(buf)

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
        """End of the gzip data: a member cut short is a premature EOF."""
        if not self.at_boundary:
            raise XVAFormatError.premature_eof()
