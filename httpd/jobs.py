"""Background work with a kept reference (no fire-and-forget), named, sized thread pools, and
the byte budget imports share for the metadata they must hold before it can be parsed."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Coroutine

__all__ = ["Jobs", "Executors", "run_soon", "MetadataBudget", "Busy"]


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
