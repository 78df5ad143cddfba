import gzip
import os

import pytest

from xva.errors import XVAFormatError
from xva.gz import GzipInflater, ParallelGzip, gzip_member, zero_gzip


def inflate(data: bytes, piece: int, step: int = 1 << 16) -> bytes:
    inf, out = GzipInflater(step), bytearray()
    for i in range(0, len(data), piece):
        for chunk, n in inf.feed(data[i:i + piece]):
            assert n <= step or chunk is None
            out += bytes(n) if chunk is None else chunk
    inf.close()
    return bytes(out)


def test_parallel_members_are_standard_gzip_in_order():
    pieces = [os.urandom(1000) + bytes([i]) * 300000 for i in range(12)]
    gz = ParallelGzip(threads=2, depth=2)
    out = []
    for i, p in enumerate(pieces):
        out += gz.submit(p) if i % 3 else gz.submit_ready(gzip_member(p))
    out += gz.drain()
    gz.close()
    assert gzip.decompress(b"".join(out)) == b"".join(pieces)


def test_zero_gzip_and_the_repeated_member_shortcut():
    blob = gzip_member(b"head") + zero_gzip((5 << 20) + 123) + gzip_member(b"tail")
    expected = b"head" + bytes((5 << 20) + 123) + b"tail"
    assert gzip.decompress(blob) == expected
    for piece in (1, 333, 1 << 20):
        assert inflate(blob, piece) == expected
    noise = os.urandom(200000)                 # a big member first, all fed in one piece
    pieces = list(GzipInflater().feed(gzip_member(noise) + blob))
    assert sum(n for chunk, n in pieces if chunk is None) >= 4 << 20  # not inflated again


def test_output_is_bounded_per_step_for_a_bomb():
    bomb = gzip_member(b"A" * (8 << 20))
    inf = GzipInflater(step=1 << 16)
    sizes = [n for _, n in inf.feed(bomb)]
    assert max(sizes) <= 1 << 16 and sum(sizes) == 8 << 20


@pytest.mark.parametrize("bad", [b"\x1f\x8b\x08\x00garbage-garbage-garbage", b"not gzip"])
def test_corrupt_or_foreign_data_is_refused(bad):
    with pytest.raises(XVAFormatError):
        inflate(gzip_member(b"ok") + bad, 5)


def test_truncated_gzip_is_premature_eof():
    blob = gzip_member(os.urandom(5000))
    for cut in (1, 10, len(blob) - 1):
        with pytest.raises(XVAFormatError) as e:
            inflate(blob[:cut], 7)
        assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"
