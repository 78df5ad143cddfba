"""xva.digests: block digests of a disk file, trusted only while the file is unchanged."""

from __future__ import annotations

import os

from xva import digests

BLOCK = 64 << 10


def _disk(path, size, writes):
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in writes:
            f.seek(off)
            f.write(data)


def _made(path, dest, size, seed=7):
    fd = os.open(path, os.O_RDONLY)
    try:
        assert digests.make(fd, size, BLOCK, seed, str(dest))
        return digests.load(str(dest), fd, size, BLOCK)
    finally:
        os.close(fd)


def test_digests_tell_the_blocks_that_differ_and_holes_read_as_zeros(tmp_path):
    size = 5 * BLOCK + 100                           # a short last block
    a, b = tmp_path / "a", tmp_path / "b"
    _disk(a, size, [(BLOCK, b"x" * 10), (3 * BLOCK, bytes(BLOCK)), (5 * BLOCK, b"end")])
    _disk(b, size, [(BLOCK, b"y" * 10), (5 * BLOCK, b"end")])  # block 3 a hole here
    seed_a, table_a = _made(a, tmp_path / "a.d", size)
    seed_b, table_b = _made(b, tmp_path / "b.d", size)
    assert seed_a == seed_b == 7
    assert len(table_a) == 6 * digests.DIGEST_SIZE
    assert digests.differing(table_a, table_b, range(6)) == [1]
    # another seed: other digests for the same bytes
    _, other = _made(a, tmp_path / "a2.d", size, seed=8)
    assert digests.differing(table_a, other, range(6)) == list(range(6))


def test_a_digest_file_is_not_trusted_once_its_file_changed(tmp_path):
    size = 4 * BLOCK
    disk, dest = tmp_path / "disk", tmp_path / "disk.d"
    _disk(disk, size, [(0, b"data")])
    assert _made(disk, dest, size) is not None
    fd = os.open(disk, os.O_RDWR)
    try:
        assert digests.load(str(dest), fd, size, BLOCK) is not None
        assert digests.load(str(dest), fd, size, 2 * BLOCK) is None     # other blocks
        assert digests.load(str(dest), fd, 2 * size, BLOCK) is None     # another size
        os.pwrite(fd, b"changed", 2 * BLOCK)     # right after make returned
        assert digests.load(str(dest), fd, size, BLOCK) is None
    finally:
        os.close(fd)
    replaced = tmp_path / "new"                      # the same name, another file
    _disk(replaced, size, [(0, b"data")])
    os.replace(replaced, disk)
    fd = os.open(disk, os.O_RDONLY)
    try:
        assert digests.load(str(dest), fd, size, BLOCK) is None
    finally:
        os.close(fd)


def test_a_malformed_or_missing_digest_file_is_none(tmp_path):
    size = 2 * BLOCK
    disk, dest = tmp_path / "disk", tmp_path / "disk.d"
    _disk(disk, size, [])
    _made(disk, dest, size)
    whole = dest.read_bytes()
    fd = os.open(disk, os.O_RDONLY)
    try:
        for bad in (b"", whole[:20], whole[:-1], whole + b"x", b"Y" + whole[1:]):
            dest.write_bytes(bad)
            assert digests.load(str(dest), fd, size, BLOCK) is None, bad[:10]
        assert digests.load(str(tmp_path / "absent"), fd, size, BLOCK) is None
    finally:
        os.close(fd)
