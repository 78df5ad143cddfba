"""Per-block digests of a disk file, kept in a small file beside it: what a delta between two
snapshots compares instead of reading both.

A snapshot copied without reflinks (ext4) shares nothing on the device with its base, so a
delta would read both files whole to compare them. When such a copy is made, its blocks are
hashed once (XXH3-128 with a seed the guest never sees) into a digest file; a delta between
two snapshots whose digest files are both current compares the digests and reads only the
blocks that differ, so its cost follows the data that changed.

A digest file names the file it describes by device, inode, size, mtime and ctime, checked
against the open file it is used with: a file written, truncated or replaced since has other
values (a snapshot is never written; an import replaces the file), so a stale digest file is
never trusted. `make` hashes only if those values are the same before and after, so a file
written meanwhile gets none. File systems stamp times from a coarse clock (a few ms), so a
write in the same tick as the last one leaves them as they were: `make` starts reading only
once that tick is past, so any write it does not read moves the ctime. Blocking functions:
run them on a worker.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Iterable

import xxhash

from .files import data_extents

__all__ = ["DIGEST_SIZE", "make", "load", "differing"]

DIGEST_SIZE = 16
_MAGIC = b"XCPDIG1\n"
# magic, seed, block size, st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns, block count
_HEAD = struct.Struct("<8sQQQQQqqQ")
_TICK = 0.02        # seconds: longer than a file system timestamp's granularity (HZ >= 100)


def _key(fd: int) -> tuple[int, int, int, int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _table(fd: int, size: int, block: int, seed: int) -> bytes:
    """The digest of each `block`-byte block of the first `size` bytes (a hole, or what lies
    past the file's end, hashes as the zeros it reads as)."""
    count = -(-size // block)
    with_data: set[int] = set()
    for start, length in data_extents(fd, size):
        with_data.update(range(start // block, (start + length - 1) // block + 1))
    zeros: dict[int, bytes] = {}
    buf = bytearray(block)
    view = memoryview(buf)
    out = bytearray()
    for b in range(count):
        n = min(block, size - b * block)
        if b not in with_data:
            if n not in zeros:
                zeros[n] = xxhash.xxh3_128_digest(bytes(n), seed=seed)
            out += zeros[n]
            continue
        got = os.preadv(fd, [view[:n]], b * block)
        if got < n:
            view[got:n] = bytes(n - got)
        out += xxhash.xxh3_128_digest(view[:n], seed=seed)
    return bytes(out)


def make(fd: int, size: int, block: int, seed: int, dest: str) -> bool:
    """Hash the open file `fd` into the digest file `dest` (written whole, then renamed into
    place); False, and no file, if `fd`'s file changed while it was read."""
    wait = os.fstat(fd).st_ctime_ns / 1e9 + _TICK - time.time()
    if wait > 0:
        time.sleep(wait)
    before = _key(fd)
    table = _table(fd, size, block, seed)
    if _key(fd) != before:
        return False
    tmp = f"{dest}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(_HEAD.pack(_MAGIC, seed, block, *before, len(table) // DIGEST_SIZE))
            f.write(table)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return True


def load(path: str, fd: int, size: int, block: int) -> tuple[int, bytes] | None:
    """`(seed, table)` of the digest file `path` if it describes the open file `fd` as it is
    now, in `block`-byte blocks of `size` bytes; None if it is absent, stale or malformed."""
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) != _HEAD.size:
                return None
            magic, seed, blk, *key, count = _HEAD.unpack(head)
            if magic != _MAGIC or blk != block or tuple(key) != _key(fd) or \
                    key[2] != size or count != -(-size // block):
                return None
            table = f.read(count * DIGEST_SIZE + 1)
    except OSError:
        return None
    return (seed, table) if len(table) == count * DIGEST_SIZE else None


def differing(a: bytes, b: bytes, blocks: Iterable[int]) -> list[int]:
    """Those of `blocks` whose digests in the tables `a` and `b` differ."""
    return [i for i in blocks
            if a[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE] != b[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE]]
