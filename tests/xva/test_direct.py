"""xva.direct: writes gathered into aligned O_DIRECT writes land byte for byte, holes kept."""

from __future__ import annotations

import errno
import os
import random

import pytest

from xva.direct import ALIGN, RUN, DirectFile

MiB = 1 << 20


def _writes(seed: int) -> list[tuple[int, bytes]]:
    """Runs of contiguous writes of odd sizes, from odd offsets, with gaps between runs."""
    rnd = random.Random(seed)
    out, at = [], 3
    for _ in range(12):
        for _ in range(rnd.randrange(1, 8)):
            n = rnd.choice((1, 17, ALIGN - 1, ALIGN, 70_000, MiB, RUN - 5, RUN + ALIGN + 3))
            out.append((at, rnd.randbytes(n)))
            at += n
        at += rnd.choice((0, 1, ALIGN, 3 * MiB + 11))
    return out


@pytest.mark.parametrize("direct", [True, False])
def test_gathered_writes_land_as_written_and_holes_stay(tmp_path, direct):
    path = str(tmp_path / "disk")
    f = DirectFile(path, direct=direct)
    if direct and not f.direct:
        pytest.skip("this file system has no O_DIRECT")
    expected = bytearray()
    for offset, data in _writes(7):
        f.write(memoryview(data), offset)
        expected[len(expected):offset] = bytes(max(0, offset - len(expected)))
        expected[offset:offset + len(data)] = data
    f.flush()
    os.ftruncate(f.fd, len(expected) + 9 * MiB)
    os.fsync(f.fd)
    f.close()
    with open(path, "rb") as r:
        got = r.read()
    assert got[:len(expected)] == bytes(expected) and got[len(expected):] == bytes(9 * MiB)
    # the 9 MiB tail was never written: still a hole
    assert os.stat(path).st_blocks * 512 < len(expected) + 4 * MiB


def test_unflushed_data_is_dropped_at_close(tmp_path):
    """close() after a failure drops what is held (nothing half-written appears later)."""
    path = str(tmp_path / "disk")
    f = DirectFile(path)
    f.write(b"x" * (ALIGN * 3), 0)
    gathered = f.direct
    f.close()
    assert os.path.getsize(path) == (0 if gathered else ALIGN * 3)


def test_a_device_refusing_the_alignment_gets_cached_writes(tmp_path, monkeypatch):
    """EINVAL from a direct write (a device wanting more than 4 KiB alignment): that run and
    every later one go through the page cache; nothing is lost."""
    path = str(tmp_path / "disk")
    f = DirectFile(path)
    if not f.direct:
        pytest.skip("this file system has no O_DIRECT")
    real, refused = os.pwrite, []

    def pwrite(fd, data, offset):
        if fd == f._direct:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)
    monkeypatch.setattr(os, "pwrite", pwrite)
    data = random.Random(3).randbytes(2 * RUN + 5)
    f.write(data, 0)
    f.flush()
    f.close()
    assert refused == [0] and not f.direct
    with open(path, "rb") as r:
        assert r.read() == data


def test_finish_gives_the_buffer_back_and_later_writes_still_land(tmp_path):
    path = str(tmp_path / "disk")
    f = DirectFile(path)
    f.write(b"a" * (ALIGN + 7), 0)
    f.finish()
    f.write(b"b" * 9, ALIGN + 7)            # after finish: through the cache, at once
    os.fsync(f.fd)
    f.close()
    with open(path, "rb") as r:
        assert r.read() == b"a" * (ALIGN + 7) + b"b" * 9
