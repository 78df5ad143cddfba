"""Background work with a kept reference (no fire-and-forget), named, sized thread pools, and
the byte budget imports share for the metadata they must hold before it can be parsed; batches
made ahead on a worker (`Ahead`), and awaiting a step to its end (`joined`)."""

from __future__ import annotations

import asyncio
import collections
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

__all__ = ["Jobs", "Executors", "run_soon", "MetadataBudget", "Busy", "Ahead", "joined"]

T = TypeVar("T")


async def joined(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even when the caller is cancelled meanwhile (a thread cannot be
    stopped half way, nor a record half made); the cancellation is re-raised afterwards."""
    fut = asyncio.ensure_future(aw)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(fut)
            break
        except asyncio.CancelledError:
            if fut.done():
                if fut.cancelled():
                    raise
                result = fut.result()
                break
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


def run_soon(coro: Coroutine[Any, Any, Any], keep: set) -> asyncio.Task:
    """A background task whose reference is kept in `keep` until it ends."""
    t = asyncio.get_running_loop().create_task(coro)
    keep.add(t)
    t.add_done_callback(keep.discard)
    return t


class Jobs:
    """The background tasks of one service: started with `spawn`, all cancelled by `close`."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
        return run_soon(coro, self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self):
        return iter(list(self._tasks))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class Executors:
    """One pool per kind of blocking work, so one kind cannot starve another: a stalled upload
    never delays a login's password check or the VDI an import asks the disk pool to create,
    and statistics never wait for a copy."""

    disk: ThreadPoolExecutor          # short file work: VDI create/copy/destroy, SR scans
    transfer: ThreadPoolExecutor      # the byte streams of imports and exports (long-held)
    passwords: ThreadPoolExecutor     # scrypt checks (deliberately slow)
    stats: ThreadPoolExecutor         # /proc readings, RRD files and rendering

    @classmethod
    def create(cls, *, disk: int = 4, transfer: int = 16, passwords: int = 2,
               stats: int = 2) -> "Executors":
        return cls(ThreadPoolExecutor(disk, thread_name_prefix="disk"),
                   ThreadPoolExecutor(transfer, thread_name_prefix="transfer"),
                   ThreadPoolExecutor(passwords, thread_name_prefix="passwords"),
                   ThreadPoolExecutor(stats, thread_name_prefix="stats"))

    def shutdown(self) -> None:
        for pool in (self.disk, self.transfer, self.passwords, self.stats):
            pool.shutdown(wait=True, cancel_futures=True)


_NOTHING = object()


class Ahead:
    """Batches made ahead of their consumer on a worker: `run(fn)` runs `fn` on a pool (an
    executor hop), `make()` returns the next batch (empty at the end). A worker keeps making
    batches, handing each to the loop as it is made, until `depth` wait untaken; then it
    returns, so a consumer that stalls (a client that stops reading) holds no thread, and
    `next` starts a worker again once it takes one. Between batches no hop through the loop
    holds the maker up, so making and consuming overlap. One worker at a time: `make` is never
    called concurrently (a generator runs in one thread at a time). A failure of `make` is
    raised by the `next` that reaches it; `close` (always await it) waits for the worker, so
    what `make` reads may be closed afterwards."""

    def __init__(self, run: Callable[[Callable[[], None]], Awaitable[None]],
                 make: Callable[[], Any], depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._run, self._make_one, self.depth = run, make, depth
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._made: collections.deque = collections.deque()   # batches, then the end or failure
        self._running = False
        self._ended = False
        self._worker: asyncio.Future | None = None
        self._waiter: asyncio.Future | None = None

    async def next(self) -> Any:
        """The next batch (one consumer at a time); the empty end, or the failure, again and
        again once reached."""
        while True:
            with self._lock:
                item = self._made[0] if self._made else _NOTHING
                if item is not _NOTHING and item and not isinstance(item, BaseException):
                    self._made.popleft()        # (the end and a failure stay: they are last)
                start = not (self._running or self._ended) and len(self._made) < self.depth
                self._running = self._running or start
            if start:
                self._worker = asyncio.ensure_future(self._run(self._make))
                self._worker.add_done_callback(self._worker_done)
            if isinstance(item, BaseException):
                raise item
            if item is not _NOTHING:
                return item
            self._waiter = self._loop.create_future()
            await self._waiter

    async def close(self) -> None:
        with self._lock:
            self._ended = True
        if self._worker is not None and not self._worker.done():
            await joined(asyncio.wait([self._worker]))

    def _make(self) -> None:            # on the worker
        while True:
            with self._lock:
                if self._ended:
                    self._running = False
                    return
            try:
                item = self._make_one()
            except BaseException as e:  # raised by `next`, on the loop
                item = e
            with self._lock:
                self._made.append(item)
                if not item or isinstance(item, BaseException):
                    self._ended = True      # (or `close` has said so already)
                stop = self._ended or len(self._made) >= self.depth
                self._running = not stop
            self._loop.call_soon_threadsafe(self._wake)
            if stop:
                return

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _worker_done(self, fut: asyncio.Future) -> None:
        failure = (asyncio.CancelledError() if fut.cancelled() else fut.exception())
        if failure is None:
            return
        with self._lock:                # the worker never ran (the pool is shut down)
            self._made.append(failure)
            self._ended, self._running = True, False
        self._wake()


def _nothing() -> None:
    pass


class Busy(Exception):
    """A budget is spent now; the caller answers TOO_BUSY (HTTP 503): retry later."""


class MetadataBudget:
    """Bytes of `ova.xml` all imports may hold at once while it streams in (its parse needs it
    whole). xapi's are KiB: those up to `free` bytes need no claim; bigger ones share `total`,
    and one that does not fit now is refused (`Busy`: TOO_BUSY, 503) rather than queued, so a slow
    sender holds no one else up. Thread-safe: claims happen on transfer workers."""

    def __init__(self, total: int = 64 << 20, free: int = 1 << 20) -> None:
        self.total, self.free = total, free
        self.used = 0
        self._lock = threading.Lock()

    def claim(self, size: int) -> Callable[[], None]:
        """Reserve `size` bytes; returns the release (idempotent)."""
        if size <= self.free:
            return _nothing
        with self._lock:
            if self.used + size > self.total:
                raise Busy(f"other imports hold {self.used} of the {self.total} bytes "
                           "metadata may take; retry")
            self.used += size
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.used -= size
        return release
