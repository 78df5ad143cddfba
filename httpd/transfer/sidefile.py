"""A new content for a VDI's file, written beside it and moved over it only when complete.

`<file>.part` starts empty (a raw upload rewrites the whole disk) or as a copy of the file (a
VHD changes some blocks; a reflink or a copy of the allocated data). `commit()` fsyncs it, moves
it over the file and fsyncs the directory; `close()` without a commit removes it, so the VDI
keeps its old content after any failure. Blocking: for a worker.
"""

from __future__ import annotations

import contextlib
import os

from ..core.filesr import copy_sparse

__all__ = ["SideFile"]


class SideFile:
    def __init__(self, path: str, size: int, *, copy: bool) -> None:
        self.path, self.size, self.copy = path, size, copy
        self.part = path + ".part"
        self._fd = -1
        self._done = False

    def discard(self) -> None:
        """Remove a side file a former attempt left (a writer of its own may then make it)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part)

    def fd(self) -> int:
        """The side file, made on first use."""
        if self._fd < 0:
            self.discard()
            if self.copy:
                copy_sparse(self.path, self.part, self.size)
                self._fd = os.open(self.part, os.O_WRONLY)
            else:
                self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.ftruncate(self._fd, self.size)
        return self._fd

    def commit(self) -> None:
        """fsync the side file (made here, or by another writer at `part`), move it over the
        VDI's file, fsync the directory."""
        if self._fd >= 0:
            os.fsync(self._fd)
        elif os.path.exists(self.part):
            fd = os.open(self.part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            os.fsync(self.fd())             # nothing written: an all-zero disk
        os.replace(self.part, self.path)
        self._done = True
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if not self._done:
            self.discard()
