"""A new content for a VDI's file, written beside it and moved over it only when complete.

`<file>.part` starts empty (a raw upload rewrites the whole disk) or as a copy of the file (a
VHD changes some blocks; a reflink or a copy of the allocated data), and is written as a
:class:`~xva.direct.DirectFile` (large writes past the page cache). `commit()` fsyncs it, moves
it over the file and fsyncs the directory; `close()` without a commit removes it, so the VDI
keeps its old content after any failure. Blocking: for a worker.
"""

from __future__ import annotations

import contextlib
import os

from xva.direct import DirectFile

from ..core.filesr import copy_sparse

__all__ = ["SideFile"]


class SideFile:
    def __init__(self, path: str, size: int, *, copy: bool) -> None:
        self.path, self.size, self.copy = path, size, copy
        self.part = path + ".part"
        self._file: DirectFile | None = None
        self._done = False

    def discard(self) -> None:
        """Remove a side file a former attempt left (a writer of its own may then make it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part)

    def file(self) -> DirectFile:
        """The side file, made on first use."""
        if self._file is None:
            self.discard()
            if self.copy:
                copy_sparse(self.path, self.part, self.size)
                self._file = DirectFile(self.part, os.O_WRONLY)
            else:
                self._file = DirectFile(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
                os.ftruncate(self._file.fd, self.size)
        return self._file

    def commit(self) -> None:
        """fsync the side file (made here, or by another writer at `part`), move it over the
        VDI's file, fsync the directory."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fd)
        elif os.path.exists(self.part):
            fd = os.open(self.part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            os.fsync(self.file().fd)        # nothing written: an all-zero disk
        os.replace(self.part, self.path)
        self._done = True
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._done:
            self.discard()
