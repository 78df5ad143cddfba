"""Writing an imported disk past the page cache: large aligned writes through ``O_DIRECT``.

An import writes each byte once and reads none of it back, so the page cache only costs:
every page the kernel takes for it is allocated and copied into (on a virtual machine whose
host reclaims idle guest memory, that copy ran at a third of memory speed), then written
back at `fsync`. :class:`DirectFile` gathers contiguous writes in an aligned buffer of its
own, reused, and writes it out through a second descriptor opened with ``O_DIRECT`` once full;
only a run's unaligned head and tail go through the page cache. A file system without
``O_DIRECT`` (tmpfs) gets plain writes. Blocking: call it from one thread at a time.
"""

from __future__ import annotations

import errno
import mmap
import os

import numpy as np

__all__ = ["DirectFile", "ALIGN", "RUN"]

ALIGN = 4096            # offsets and lengths of direct writes (any device's logical block)
RUN = 4 << 20           # bytes gathered before one direct write


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    n = os.pwrite(fd, data, offset)
    while n < len(data):
        n += os.pwrite(fd, data[n:], offset + n)


class DirectFile:
    """One destination file, by default created empty (holes stay holes); ``flags`` open it
    otherwise (an existing file: ``os.O_WRONLY``). :meth:`write` may keep data in its buffer
    until :meth:`flush`, which every caller must reach before the file is truncated, synced
    or closed."""

    def __init__(self, path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, *,
                 direct: bool = True) -> None:
        self.fd = os.open(path, flags, 0o600)
        self._direct = -1
        self._map: mmap.mmap | None = None
        self._buf: np.ndarray | None = None
        self._start = 0         # the file offset of the buffer's first byte
        self._held = 0          # bytes in the buffer
        try:
            if direct:
                try:
                    self._direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
                except OSError:     # EINVAL where the file system has no direct I/O
                    pass
            if self._direct >= 0:
                self._map = mmap.mmap(-1, RUN)
                self._buf = np.frombuffer(self._map, np.uint8)
        except BaseException:
            self.close()
            raise

    @property
    def direct(self) -> bool:
        return self._direct >= 0

    def write(self, data: bytes | memoryview, offset: int) -> None:
        if self._buf is None:
            pwrite_all(self.fd, data, offset)
            return
        if self._held and offset != self._start + self._held:
            self.flush()
        if not self._held:
            head = min(-offset % ALIGN, len(data))
            if head:                # up to the next aligned offset: through the cache
                pwrite_all(self.fd, data[:head], offset)
                data, offset = data[head:], offset + head
            self._start = offset
        src = np.frombuffer(data, np.uint8)
        done = 0
        while done < len(src):
            k = min(len(src) - done, RUN - self._held)
            # numpy copies without the GIL, so the parsing thread runs meanwhile
            self._buf[self._held:self._held + k] = src[done:done + k]
            self._held += k
            done += k
            if self._held == RUN:
                self._write_out(RUN)
                self._start += RUN
                self._held = 0

    def flush(self) -> None:
        """Write out what the buffer holds: its aligned part direct, the rest cached."""
        if not self._held:
            return
        aligned = self._held // ALIGN * ALIGN
        if aligned:
            self._write_out(aligned)
        if self._held > aligned:
            with memoryview(self._map) as whole, whole[aligned:self._held] as tail:
                pwrite_all(self.fd, tail, self._start + aligned)
        self._start += self._held
        self._held = 0

    def _write_out(self, length: int) -> None:
        """The buffer's first ``length`` bytes (a multiple of ALIGN) at ``_start``, direct.
        The caller moves ``_start`` on."""
        # (views released on the way out, even by a failure: close() can then free the map)
        with memoryview(self._map) as whole, whole[:length] as view:
            try:
                n = os.pwrite(self._direct, view, self._start) if self._direct >= 0 else 0
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                # a device that wants more alignment than ALIGN: the cache from now on
                os.close(self._direct)
                self._direct, n = -1, 0
            if n < length:              # a short direct write: the rest through the cache
                pwrite_all(self.fd, view[n:], self._start + n)

    def finish(self) -> None:
        """Flush and give the buffer back (a complete disk): later writes, if any, go
        through the cache."""
        self.flush()
        self._free_buffer()

    def _free_buffer(self) -> None:
        if self._map is not None:
            self._buf, m, self._map = None, self._map, None
            try:
                m.close()
            except BufferError:     # a view still held somewhere: freed with it
                pass

    def close(self) -> None:
        """Close without flushing (after a failure, what is held is dropped)."""
        if self._direct >= 0:
            os.close(self._direct)
            self._direct = -1
        self._free_buffer()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
