"""Uploads driven by the event loop: the loop reads the body, a worker applies it.

The loop owns the request: it reads the body up to :data:`AHEAD` bytes ahead of the worker
(:func:`read_ahead`: beyond that it stops reading, aiohttp's StreamReader pauses the socket at
its high-water mark, and a slow disk slows the client), runs the metadata step itself, and
hands what arrived meanwhile, as one batch, to a worker of the transfer pool, where the sans-IO
XVA reader inflates it and a :class:`~xva.files.DiskApplier` writes it. So the socket keeps
flowing while a worker writes, and a batch costs one thread hop, not one per chunk. Every step
handed to a thread is joined before these functions return or raise, cancelled or not, so
whoever rolls back afterwards never races a write still in flight. Nothing here reads task
state: the caller cancels the coroutine (``TaskManager.race_cancel``) and the joins do the
rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from typing import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator, \
    Mapping

from xva.events import Event, Metadata
from xva.files import DiskApplier
from xva.reader import XVAReader

from ..jobs import joined
from ..model.errors import XenAPIError
from .qcow2 import check_qcow2, from_qcow2
from .sidefile import SideFile
from .vhd import VhdApplier

__all__ = ["AHEAD", "read_ahead", "import_xva", "RawWriter", "import_raw", "import_vhd",
           "import_qcow2"]

Offload = Callable[..., Awaitable]
_BLOCK = 65536
_ZEROS = bytes(_BLOCK)
AHEAD = 8 << 20             # body bytes read ahead of the worker, at most (per upload)
_WRITES_BEHIND = 8          # disk writes (<= 1 MiB each) queued to an import's writer thread


async def read_ahead(chunks: AsyncIterable[bytes], limit: int = AHEAD
                     ) -> AsyncIterator[list[bytes]]:
    """Batches of ``chunks``: a task reads on while the caller handles the last batch,
    until ``limit`` bytes wait; each batch is everything read since the one before (at
    least one chunk).  A failure of ``chunks`` is raised where the caller takes a batch.
    Close it (``contextlib.aclosing``) as soon as it is no longer read: until then the
    task may go on reading the body."""
    queue: collections.deque[bytes] = collections.deque()
    held = 0
    arrived, room = asyncio.Event(), asyncio.Event()
    ended: list[BaseException | None] = []

    async def fill() -> None:
        nonlocal held
        try:
            async for chunk in chunks:
                queue.append(chunk)
                held += len(chunk)
                arrived.set()
                if held >= limit:
                    room.clear()
                    await room.wait()
            ended.append(None)
        except Exception as e:  # noqa: BLE001 - handed to the caller, raised there
            ended.append(e)
        finally:
            arrived.set()

    task = asyncio.ensure_future(fill())
    try:
        while True:
            if not (queue or ended):
                await arrived.wait()
                arrived.clear()
            if queue:
                batch = list(queue)
                queue.clear()
                held = 0
                room.set()
                yield batch
            elif ended:
                if ended[0] is not None:
                    raise ended[0]
                return
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _fed(reader: XVAReader, batch: list[bytes]) -> Iterator[Event]:
    """The events of a batch of chunks, made lazily (in the worker that applies them)."""
    for chunk in batch:
        yield from reader.feed(chunk)
        if reader.done:
            return


def _apply_until_metadata(applier: DiskApplier, events: Iterable[Event]) -> Metadata | None:
    """In a worker: apply a feed's events; stop at the metadata, which the loop handles."""
    for event in events:
        if isinstance(event, Metadata):
            return event
        applier.apply(event)
    return None


async def import_xva(chunks: AsyncIterable[bytes], offload: Offload,
                     disk_path: Callable[[str], str],
                     on_metadata: Callable[[Metadata], Awaitable[Mapping[str, int] | None]],
                     *, force: bool = False,
                     claim: Callable[[int], Callable[[], None]] | None = None) -> dict[str, str]:
    """Import an XVA body into files.  ``offload(fn, *args)`` runs a step on a worker;
    ``on_metadata`` (a coroutine, on the loop) creates the records and, for the xapi layout,
    returns the disks to expect; ``disk_path`` maps a disk id to its file.  Returns disk id
    -> path. ``claim``: the budget ova.xml is held under while it streams in."""
    reader = XVAReader(force=force, claim=claim)
    # writes go to a thread of their own, so inflating overlaps the kernel's copying
    applier = DiskApplier(disk_path, behind=_WRITES_BEHIND)

    async def drain(events: Iterable[Event]) -> None:
        # a feed's events are lazy: the worker inflates and writes; the loop only sees Metadata
        while (meta := await joined(offload(_apply_until_metadata, applier, events))) is not None:
            disks = await joined(on_metadata(meta))
            if disks is not None:
                reader.expect_disks(disks)

    try:
        async with contextlib.aclosing(read_ahead(chunks)) as batches:
            async for batch in batches:
                await drain(_fed(reader, batch))
                if reader.done:
                    break
        await drain(await joined(offload(reader.close)))
        await joined(offload(applier.sync))     # the task succeeds only once this is done
    finally:
        reader.abort()          # inflater threads (if any) stop now, not when collected
        await joined(offload(applier.close))    # joins the write in progress: not on the loop
    return applier.paths


class RawWriter:
    """A raw disk image written beside the VDI's file (sparse: all-zero blocks stay holes) and
    moved over it only by `finish()`: until then, and on any failure, the VDI keeps its old
    content. Its methods block: run them on a worker, one at a time, then `close()`."""

    def __init__(self, path: str, size: int, *, whole: bool = False) -> None:
        self.size = size
        self.whole = whole          # the body's end is the connection's: all of the disk
        self.written = 0
        self.side = SideFile(path, size, copy=False)

    def write(self, data: bytes) -> None:
        if self.written + len(data) > self.size:
            raise XenAPIError("VDI_IO_ERROR", f"more data than the disk's {self.size} bytes")
        out = self.side.file()
        view = memoryview(data)
        for i in range(0, len(view), _BLOCK):
            block = view[i:i + _BLOCK]
            if block != _ZEROS[:len(block)]:
                out.write(block, self.written + i)
        self.written += len(data)

    def finish(self) -> int:
        if self.written == 0:
            raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF", "the body is empty: nothing to write")
        if self.whole and self.written < self.size:
            raise XenAPIError("IMPORT_ERROR_PREMATURE_EOF",
                              f"the connection ended after {self.written} of the disk's "
                              f"{self.size} bytes")
        self.side.commit()
        return self.written

    def close(self) -> None:
        self.side.close()


def _write_all(sink, batch: list[bytes]) -> None:
    for chunk in batch:
        sink.write(chunk)


async def _apply_body(chunks: AsyncIterable[bytes], offload: Offload, sink) -> int:
    """Each chunk to `sink.write` on a worker, then `sink.finish()`; `sink.close()` always."""
    try:
        async with contextlib.aclosing(read_ahead(chunks)) as batches:
            async for batch in batches:
                await joined(offload(_write_all, sink, batch))
        return await joined(offload(sink.finish))
    finally:
        await joined(offload(sink.close))


async def import_raw(chunks: AsyncIterable[bytes], offload: Offload, path: str,
                     size: int, *, whole: bool = False) -> int:
    """Write a raw body into `path` (a `size`-byte disk); returns the bytes written. An empty
    body is refused; `whole` (a body framed by the connection's end, so a cut looks like an
    end): anything short of the whole disk is refused too. The VDI changes only on success."""
    return await _apply_body(chunks, offload, RawWriter(path, size, whole=whole))


async def import_vhd(chunks: AsyncIterable[bytes], offload: Offload, path: str,
                     size: int) -> int:
    """Apply a dynamic VHD body to the `size`-byte disk at `path` (only its blocks; the VDI
    changes only if the whole stream was good); returns the bytes written."""
    return await _apply_body(chunks, offload, VhdApplier(path, size))


class Qcow2Spool:
    """A qcow2 upload: spooled to `spool` (bounded by what a `size`-byte disk's image can
    take), then checked and converted into the VDI by `finish()` (transfer.qcow2)."""

    def __init__(self, path: str, size: int, spool: str) -> None:
        self.path, self.size, self.spool = path, size, spool
        self.limit = size + size // 8 + (64 << 20)      # data, tables, a little slack
        self.written = 0
        self._fd = -1

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.written += len(data)
        if self.written > self.limit:
            raise XenAPIError("VDI_IO_ERROR", f"a qcow2 image of a {self.size}-byte disk is "
                                               f"not over {self.limit} bytes")
        os.write(self._fd, data)

    def finish(self) -> int:
        if self._fd < 0:
            raise XenAPIError("VDI_IO_ERROR", "an empty body is not a qcow2 image")
        os.close(self._fd)
        self._fd = -1
        check_qcow2(self.spool, self.size)
        from_qcow2(self.spool, self.path, self.size)
        return self.written

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if os.path.exists(self.spool):
            os.unlink(self.spool)


async def import_qcow2(chunks: AsyncIterable[bytes], offload: Offload, path: str, size: int,
                       spool: str) -> int:
    """A qcow2 body into the `size`-byte disk at `path`, through the spool file `spool`."""
    return await _apply_body(chunks, offload, Qcow2Spool(path, size, spool))
