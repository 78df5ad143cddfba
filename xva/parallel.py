"""Pieces compressed on a thread pool, handed back in their order (pigz's way): each piece
becomes an independent unit (a gzip member, a zstd frame) that every reader of concatenated
units reads, so a writer uses every core without changing the format."""

from __future__ import annotations

import collections
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor

from .errors import XVAUsageError

__all__ = ["ParallelCompressor"]


class ParallelCompressor:
    """Compress pieces into units (:meth:`unit`: a function that releases the GIL, as isal's
    and libzstd's do) on a thread pool; outputs come back in order.  A subclass names the
    unit, its default level and its threads' name.

    At most ``depth`` pieces are in flight, which bounds memory: :meth:`submit` blocks on the
    oldest piece when the window is full.  :meth:`close` cancels what is queued."""

    unit: Callable[..., bytes]          # (data, level) -> one unit
    default_level = 0
    name = "xva-compress"

    def __init__(self, level: int | None = None, threads: int = 2,
                 executor: Executor | None = None, depth: int | None = None) -> None:
        self.level = self.default_level if level is None else level
        self._own = executor is None
        self._pool = executor or ThreadPoolExecutor(threads, thread_name_prefix=self.name)
        self._depth = depth or 2 * threads
        self._queue: collections.deque[Future[bytes] | object] = collections.deque()
        self._closed = False

    def submit(self, data) -> list[bytes]:
        """Queue ``data`` (a buffer, or whatever :meth:`unit` takes; not modified until its
        output is out) and return ready outputs."""
        self._check()
        self._queue.append(self._pool.submit(type(self).unit, data, self.level))
        return self._ready(block=len(self._queue) > self._depth)

    def submit_ready(self, member: object) -> list:
        """Queue already-compressed bytes (e.g. a zero run), or any other object standing
        for output, in their place in the order."""
        self._check()
        self._queue.append(member)
        return self._ready(block=False)

    def drain(self) -> list[bytes]:
        """Wait for every queued piece and return all outputs in order."""
        self._check()
        out = []
        while self._queue:
            item = self._queue.popleft()
            out.append(item.result() if isinstance(item, Future) else item)
        return out

    def close(self) -> None:
        """Drop queued work and (if the pool is ours) stop the threads; safe to call twice."""
        self._closed = True
        for item in self._queue:
            if isinstance(item, Future):
                item.cancel()
        self._queue.clear()
        if self._own:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _ready(self, block: bool) -> list[bytes]:
        out = []
        while self._queue:
            item = self._queue[0]
            if isinstance(item, Future):
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
