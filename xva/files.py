"""Blocking file adapters around the sans-IO core: read a sparse disk's data extents, apply
reader events to destination files keeping holes, and wrap exports with progress and
cancellation.  The daemon runs these in a thread pool; nothing here knows about asyncio.
"""

from __future__ import annotations

import fcntl
import functools
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

from .appliance import Appliance, ApplianceWriter
from .blocks import BlockWriter
from .direct import DirectFile
from .errors import XVACancelled, XVAIOError
from .events import DiskDone, Event, Metadata, Warning_, Write, Zeros
from .gz import MEMBER_SIZE
from .reader import XVAReader

__all__ = ["DiskApplier", "Export", "data_extents", "shared_extents", "export_appliance",
           "export_blocks",
           "import_stream", "sparse_pieces"]

OUT_PIECE = 1 << 20


def data_extents(fd: int, size: int | None = None) -> list[tuple[int, int]]:
    """``(offset, length)`` of the data regions of an open file, found with SEEK_DATA /
    SEEK_HOLE so that holes are never read.  Falls back to one extent without support."""
    if size is None:
        size = os.fstat(fd).st_size
    extents, pos = [], 0
    try:
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == 6:                   # ENXIO: only a hole is left
                    break
                raise
            end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
            if start >= size:
                break
            extents.append((start, end - start))
            pos = end
    except (AttributeError, OSError):
        return [(0, size)] if size else []
    return extents


# linux/fiemap.h: struct fiemap (32 bytes) followed by struct fiemap_extent (56 bytes) each
_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_HEAD = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQ16xI12x")
_FIEMAP_FLAG_SYNC = 0x1
_FE_LAST = 0x1
# extents whose data has no known place of its own on the device (unknown, delalloc, encoded,
# encrypted, inline, tail): never "the same" as another file's
_FE_NOT_PLACED = 0x2 | 0x4 | 0x8 | 0x80 | 0x200 | 0x400
_FIEMAP_BATCH = 512


def _placed(fd: int, size: int) -> list[tuple[int, int, int]]:
    """``(logical, physical, length)`` of the file's extents that sit at a known place on the
    device (FS_IOC_FIEMAP, synced first), in logical order; [] where FIEMAP is not there."""
    out: list[tuple[int, int, int]] = []
    pos = 0
    while pos < size:
        buf = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEAD.pack_into(buf, 0, pos, size - pos, _FIEMAP_FLAG_SYNC, 0, _FIEMAP_BATCH, 0)
        try:
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
        except OSError:
            return []
        mapped = _FIEMAP_HEAD.unpack_from(buf)[3]
        if not mapped:
            break
        for i in range(mapped):
            logical, physical, length, flags = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
            if not flags & _FE_NOT_PLACED:
                out.append((logical, physical, length))
            pos = logical + length
            if flags & _FE_LAST:
                return out
    return out


def shared_extents(fd_a: int, fd_b: int, size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges within ``size`` where two files on one file system hold the
    very same device blocks at the same offsets (reflinked copies: a snapshot and its base
    share all but what was written since), so their content there is equal without reading
    it. [] on file systems without shared extents (ext4, tmpfs) or without FIEMAP."""
    if os.fstat(fd_a).st_dev != os.fstat(fd_b).st_dev:
        return []
    a, b = _placed(fd_a, size), _placed(fd_b, size)
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        la, pa, na = a[i]
        lb, pb, nb = b[j]
        start, end = max(la, lb), min(la + na, lb + nb, size)
        if start < end and pa - la == pb - lb:
            if out and out[-1][0] + out[-1][1] == start:
                out[-1] = (out[-1][0], end - out[-1][0])
            else:
                out.append((start, end - start))
        if la + na <= lb + nb:
            i += 1
        else:
            j += 1
    return out


def sparse_pieces(fd: int, size: int | None = None, piece: int = MEMBER_SIZE,
                  extents: list[tuple[int, int]] | None = None,
                  progress: Callable[[int], None] | None = None
                  ) -> Iterator[tuple[int, bytes]]:
    """``(offset, bytes)`` pieces of a file's data extents, aligned to ``piece``: what the
    writers take as a disk source.  ``progress(n)`` is told about each piece read."""
    if extents is None:
        extents = data_extents(fd, size)
    for start, length in extents:
        pos, end = start, start + length
        while pos < end:
            n = min(end, (pos // piece + 1) * piece) - pos
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise XVAIOError(f"short read at {pos}: the disk changed under the export")
            if progress is not None:
                progress(n)
            yield pos, data
            pos += n


class Export:
    """An export in progress: iterate for byte pieces (bytes, or views of a bigger piece: no
    copy) of at most ``OUT_PIECE`` bytes;
    ``done``/``total`` are data bytes read of the disks' data bytes (task progress);
    ``cancel()`` (any thread) stops it at the next piece; ``close()`` releases files and
    compression threads."""

    def __init__(self, stream: Iterator[bytes], files: list[int], total: int) -> None:
        self._stream, self._files = stream, files
        self.total, self.done = total, 0
        self.bytes_out = 0
        self._cancelled = threading.Event()

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 1.0

    def _count(self, n: int) -> None:
        self.done += n

    def cancel(self) -> None:
        self._cancelled.set()

    def __iter__(self) -> Iterator[bytes]:
        try:
            for data in self._stream:
                pieces = [data]
                if len(data) > OUT_PIECE:
                    view = memoryview(data)
                    pieces = [view[i:i + OUT_PIECE] for i in range(0, len(view), OUT_PIECE)]
                for piece in pieces:
                    if self._cancelled.is_set():
                        raise XVACancelled("export cancelled")
                    self.bytes_out += len(piece)
                    yield piece
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()
        while self._files:
            os.close(self._files.pop())


def _pread(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset)


def _open_disks(paths: Iterable[str]) -> tuple[list[int], list[list[tuple[int, int]]]]:
    fds, extents = [], []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY))
            extents.append(data_extents(fds[-1]))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds, extents


def export_appliance(appliance: Appliance, disks: Mapping[str, str], **writer_options) -> Export:
    """Export files (vdi name -> path) in the appliance layout."""
    names = [v.name for v in appliance.vdis if v.name in disks]
    fds, extents = _open_disks(disks[n] for n in names)
    export = Export(iter(()), fds, sum(l for ext in extents for _, l in ext))
    writer = ApplianceWriter(appliance, **writer_options)
    export._stream = writer.stream({
        n: sparse_pieces(fd, v.size, extents=ext, progress=export._count)
        for n, fd, ext, v in zip(names, fds, extents,
                                 [v for v in appliance.vdis if v.name in disks])},
        {n: functools.partial(_pread, fd) for n, fd in zip(names, fds)})
    return export


def export_blocks(ova_xml: bytes, disks: Iterable[tuple[str, str, int]],
                  **writer_options) -> Export:
    """Export files given as ``(ref_id, path, size)`` in xapi's block layout."""
    disks = list(disks)
    fds, extents = _open_disks(path for _, path, _ in disks)
    export = Export(iter(()), fds, sum(l for ext in extents for _, l in ext))
    writer = BlockWriter(ova_xml, **writer_options)
    export._stream = writer.stream(
        (ref, size, sparse_pieces(fd, size, extents=ext, progress=export._count))
        for (ref, _, size), fd, ext in zip(disks, fds, extents))
    return export


class DiskApplier:
    """Apply reader events to destination files.  Destinations are named by ``disk_path``
    (disk id -> path) on first use and created empty, so a :class:`Zeros` event costs
    nothing and the result stays sparse; :class:`DiskDone` sets the final size.  Data goes
    to each file as a :class:`~xva.direct.DirectFile` (gathered, aligned, past the page
    cache).

    With ``behind`` > 0 the writes go to a writer thread, at most ``behind`` of them queued
    (their data is immutable: bytes, or views of bytes), so the caller parses and inflates
    the next bytes while these are copied out.  A write that failed is raised by the next
    call; :meth:`sync` waits for every write, :meth:`close` for the one in progress (the
    rest are dropped) before any file is closed."""

    def __init__(self, disk_path: Callable[[str], str], *, behind: int = 0) -> None:
        self._disk_path = disk_path
        self._files: dict[str, DirectFile] = {}
        self.paths: dict[str, str] = {}
        self.warnings: list[str] = []
        self.bytes_written = 0
        self._queue: queue.Queue | None = queue.Queue(behind) if behind > 0 else None
        self._thread: threading.Thread | None = None
        self._failed: BaseException | None = None
        self._dropping = False

    def apply(self, event: Event) -> None:
        if isinstance(event, Write):
            f = self._file(event.disk)
            if self._queue is None:
                f.write(event.data, event.offset)
            else:
                self._raise_failure()
                if self._thread is None:
                    self._thread = threading.Thread(target=self._writer, daemon=True,
                                                    name="xva-writer")
                    self._thread.start()
                self._queue.put((f, event.data, event.offset))
            self.bytes_written += len(event.data)
        elif isinstance(event, Zeros):
            self._file(event.disk)
        elif isinstance(event, DiskDone):
            self._wait()                    # (the writer thread is idle until the next put)
            f = self._file(event.disk)
            f.finish()                      # its buffer back: a VM's disks are done in turn
            os.ftruncate(f.fd, event.size)
        elif isinstance(event, Warning_):
            self.warnings.append(event.message)

    def _writer(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if not (self._dropping or self._failed):
                    if item is _FLUSH:
                        self._flush()
                    else:
                        item[0].write(item[1], item[2])
            except BaseException as e:  # noqa: BLE001 - raised by the caller's next call
                self._failed = e
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def _flush(self) -> None:
        for f in self._files.values():
            f.flush()

    def _wait(self) -> None:
        """Every write so far is out of the buffers (a failed one is raised)."""
        if self._queue is None:
            self._flush()
        else:
            self._raise_failure()
            if self._thread is not None:
                self._queue.put(_FLUSH)
                self._queue.join()
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _file(self, disk: str) -> DirectFile:
        f = self._files.get(disk)
        if f is None:
            path = self._disk_path(disk)
            f = self._files[disk] = DirectFile(path)
            self.paths[disk] = path
        return f

    def sync(self) -> None:
        """Every disk written so far is on stable storage (call before reporting success)."""
        self._wait()
        for f in self._files.values():
            os.fsync(f.fd)

    def close(self) -> None:
        if self._thread is not None:
            self._dropping = True           # after a failure: no point writing the rest
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        while self._files:
            self._files.popitem()[1].close()


_FLUSH = ("flush",)


def _run(events_of, reader, on_metadata, disk_path) -> dict[str, str]:
    applier = DiskApplier(disk_path)
    try:
        for event in events_of():
            if isinstance(event, Metadata):
                disks = on_metadata(event)
                if disks is not None:
                    reader.expect_disks(disks)
            else:
                applier.apply(event)
    finally:
        applier.close()
    return applier.paths


def import_stream(chunks: Iterable[bytes], disk_path: Callable[[str], str],
                  on_metadata: Callable[[Metadata], Mapping[str, int] | None] = lambda m: None,
                  *, force: bool = False) -> dict[str, str]:
    """Import an XVA byte stream into files.  ``on_metadata`` sees the Metadata event and,
    for the xapi layout, returns the disks to expect; ``disk_path`` maps a disk id to the
    destination path.  Returns disk id -> path.  Stop it by making ``chunks`` raise."""
    reader = XVAReader(force=force)

    def events() -> Iterator[Event]:
        for chunk in chunks:
            yield from reader.feed(chunk)
            if reader.done:
                return
        yield from reader.close()

    try:
        return _run(events, reader, on_metadata, disk_path)
    finally:
        reader.abort()          # after a failure: the inflater threads stop now
