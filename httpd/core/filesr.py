"""The local file SR: each VDI a sparse raw file `<uuid>.raw` in the SR's directory (an ISO
library SR: each VDI an `<name>.iso` file).

Blocking functions, meant for a thread pool. Copies move only allocated data (a reflink when the
filesystem can, else SEEK_DATA/SEEK_HOLE extents through copy_file_range), so a 1 TiB disk with
100 MiB written costs 100 MiB. Anything that fails half-way removes what it created.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from xva import digests
from xva.files import data_extents
from xva.vhd import BLOCK_SIZE

from ..model.errors import DISK_FULL, XenAPIError

__all__ = ["FileSR", "SRStats", "copy_sparse", "digest_file"]

log = logging.getLogger(__name__)

_FICLONE = 0x40049409        # linux/fs.h: share all blocks of one file with another
_COPY_CHUNK = 64 * 2**20
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


@dataclass(frozen=True)
class SRStats:
    physical_size: int
    physical_utilisation: int
    free: int


def digest_file(vdi_file: str | Path) -> str:
    """Where the block digests of a VDI's file are kept (`xva.digests`): a hidden file beside
    it, which SR.scan does not take for a VDI."""
    head, name = os.path.split(str(vdi_file))
    return os.path.join(head, f".{name}.digests")


def copy_sparse(src: str, dst: str, size: int, *,
                check: Callable[[int], None] | None = None) -> bool:
    """Copy src to a new sparse dst of `size` bytes; `check(done)` may raise to abort. True if
    it is a reflink (the two files share their blocks on the device)."""
    fd_in = os.open(src, os.O_RDONLY)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except BaseException:
        os.close(fd_in)
        raise
    ok = False
    try:
        try:
            fcntl.ioctl(fd_out, _FICLONE, fd_in)
            os.ftruncate(fd_out, size)
            ok = True
            return True
        except OSError:
            pass   # no reflink here (ext4, tmpfs): copy the extents
        os.ftruncate(fd_out, size)
        done = 0
        in_kernel = True
        for start, length in data_extents(fd_in, size):
            pos, end = start, start + length
            while pos < end:
                n = min(_COPY_CHUNK, end - pos)
                if in_kernel:
                    try:
                        copied = os.copy_file_range(fd_in, fd_out, n, pos, pos)
                    except OSError as e:
                        if e.errno not in _NO_COPY_RANGE:
                            raise
                        in_kernel = False    # across filesystems on older kernels: copy by hand
                        continue
                else:
                    copied = os.pwrite(fd_out, os.pread(fd_in, min(n, 2**20), pos), pos)
                if copied == 0:
                    break
                pos += copied
                done += copied
                if check is not None:
                    check(done)
        os.fsync(fd_out)
        ok = True
        return False
    finally:
        os.close(fd_in)
        os.close(fd_out)
        if not ok:
            _unlink_quietly(dst)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class FileSR:
    """The files of one SR: `<location>.raw` (a disk SR) or `<location>.iso` (an ISO library)."""

    def __init__(self, path: str | Path, suffix: str = ".raw") -> None:
        self.path = Path(path)
        self.suffix = suffix

    def vdi_path(self, location: str) -> Path:
        if "/" in location or location in ("", ".", ".."):
            raise XenAPIError("INVALID_VALUE", "location", location)
        return self.path / f"{location}{self.suffix}"

    def stats(self) -> SRStats:
        st = os.statvfs(self.path)
        total = st.f_blocks * st.f_frsize
        free = st.f_bavail * st.f_frsize
        return SRStats(total, total - st.f_bfree * st.f_frsize, free)

    def check_fits(self, requested: int) -> None:
        """SR_FULL before writing anything: requested bytes against what the filesystem has."""
        free = self.stats().free
        if requested > free:
            raise XenAPIError("SR_FULL", requested, free)

    def create(self, location: str, size: int) -> None:
        if size < 0:
            raise XenAPIError("INVALID_VALUE", "virtual_size", size)
        self.check_fits(size)
        path = self.vdi_path(location)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
        except BaseException:
            os.close(fd)
            _unlink_quietly(str(path))
            raise
        os.close(fd)

    def destroy(self, location: str) -> None:
        path = self.vdi_path(location)
        _unlink_quietly(str(path))
        _unlink_quietly(digest_file(path))

    def _seed(self) -> int | None:
        """This SR's digest seed (random, made once, kept in the SR's directory, mode 0600):
        digests made with it compare with each other, and no guest can aim at collisions.
        Published whole with link(2), so agents sharing the SR agree on it. None: unreadable."""
        path = self.path / ".digest-seed"
        if not path.exists():
            tmp = self.path / f".digest-seed.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, os.urandom(8))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass                     # another agent's came first: that one it is
            finally:
                _unlink_quietly(str(tmp))
        data = path.read_bytes()
        return int.from_bytes(data, "little") if len(data) == 8 else None

    def resize(self, location: str, size: int) -> None:
        path = self.vdi_path(location)
        current = path.stat().st_size
        if size < current:
            raise XenAPIError("VDI_TOO_SMALL", size, current)
        self.check_fits(size - current)
        os.truncate(path, size)

    def allocated(self, location: str) -> int:
        try:
            return self.vdi_path(location).stat().st_blocks * 512
        except FileNotFoundError:
            return 0

    def copy_from(self, src: Path, location: str, size: int,
                  check: Callable[[int], None] | None = None, *, digest: bool = False) -> None:
        """A sparse copy of `src` as this SR's `location`; SR_FULL if the data cannot fit.
        `digest` (a snapshot's copy): a copy that shares no blocks with `src` gets its block
        digests, so a delta against it compares them instead of reading it."""
        self.check_fits(os.stat(src).st_blocks * 512)
        path = self.vdi_path(location)
        try:
            reflinked = copy_sparse(str(src), str(path), size, check=check)
        except OSError as e:
            if e.errno in DISK_FULL:
                raise XenAPIError("SR_FULL", size, self.stats().free) from None
            raise
        if digest and not reflinked:
            try:
                self._digest(path, size)
            except OSError:     # only a delta's speed depends on it: the copy stands
                log.warning("could not make the block digests of %s", path, exc_info=True)

    def _digest(self, path: Path, size: int) -> None:
        seed = self._seed()
        if seed is None:
            return
        fd = os.open(path, os.O_RDONLY)
        try:
            digests.make(fd, size, BLOCK_SIZE, seed, digest_file(path))
        finally:
            os.close(fd)

    def sweep_side_files(self) -> list[str]:
        """Remove the `<file>.part` side files of uploads the agent died in (never a VDI's),
        and digest files whose VDI file is gone or that were being written."""
        gone = []
        for entry in os.scandir(self.path):
            if not entry.is_file(follow_symlinks=False):
                continue
            name = entry.name
            orphan = name.startswith(".") and name.endswith(self.suffix + ".digests") and \
                not (self.path / name[1:-len(".digests")]).exists()
            half = name.startswith(".") and name.endswith(".tmp") and \
                (".digests." in name or name.startswith(".digest-seed."))
            if name.endswith(self.suffix + ".part") or orphan or half:
                _unlink_quietly(entry.path)
                gone.append(name)
        return gone

    def scan(self) -> dict[str, tuple[int, int]]:
        """location -> (size, bytes allocated) of every VDI file present (to notice files
        added or removed by hand)."""
        out = {}
        for entry in os.scandir(self.path):
            if entry.name.endswith(self.suffix) and entry.is_file(follow_symlinks=False):
                st = entry.stat()
                out[entry.name[:-len(self.suffix)]] = (st.st_size, st.st_blocks * 512)
        return out
