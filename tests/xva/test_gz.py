import gzip
import itertools
import os
import random
import shutil
import subprocess
import threading

import pytest
from isal import isal_zlib

from xva.errors import XVAFormatError
from xva.gz import (HINT_MAX_OUT, MEMBER_SIZE, GzipInflater, ParallelGzip, gzip_member,
                    incompressible, stored_member, stored_size, zero_gzip)


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


# --- size hints: members inflated whole, several at once --------------------------------------

def plain_member(data: bytes) -> bytes:
    """A member without a size hint, as gzip, pigz and xapi write them."""
    return isal_zlib.compress(data, 1, 31)


def rehint(member: bytes, total: int) -> bytes:
    """The same member claiming another total length."""
    return member[:16] + total.to_bytes(4, "little") + member[20:]


def inflater_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("xva-inflate")]


def mixed(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(1, 300000)) if i % 3 == 0 else
            (b"compressible text %d " % i) * rng.randrange(1, 250000) for i in range(9)]


def test_a_hinted_member_is_standard_gzip_carrying_its_length():
    member = gzip_member(b"hello" * 1000)
    assert member[3] == 0x04 and member[10:16] == b"\x08\x00XS\x04\x00"
    assert int.from_bytes(member[16:20], "little") == len(member)
    assert gzip.decompress(member) == b"hello" * 1000


@pytest.mark.parametrize("tool", [["gunzip", "-c"], ["pigz", "-dc"], ["zcat"]])
def test_real_tools_read_hinted_files(tool, tmp_path):
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} not installed")
    parts = mixed(1)
    path = tmp_path / "chunk-00000000.gz"
    path.write_bytes(b"".join(gzip_member(p) for p in parts) + zero_gzip(3 << 20))
    out = subprocess.run([*tool, str(path)], check=True, capture_output=True).stdout
    assert out == b"".join(parts) + bytes(3 << 20)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("piece,step", [(1, 1 << 16), (4093, 1 << 12), (1 << 20, 1 << 20),
                                        (1 << 30, 7777)])
def test_hinted_and_unhinted_members_inflate_alike(seed, piece, step):
    parts = mixed(seed)
    expected = b"".join(parts) + bytes(2 << 20) + parts[0]
    hinted = b"".join(gzip_member(p) for p in parts) + zero_gzip(2 << 20) + gzip_member(parts[0])
    plain = b"".join(plain_member(p) for p in parts) + plain_member(bytes(2 << 20)) + \
        plain_member(parts[0])
    mix = b"".join((gzip_member if i % 2 else plain_member)(p) for i, p in enumerate(parts))
    if piece == 1:                               # byte by byte: keep it small
        expected, hinted, plain = parts[1][:50000], gzip_member(parts[1][:50000]), b""
    assert inflate(hinted, piece, step) == expected
    if plain:
        assert inflate(plain, piece, step) == expected
        assert inflate(mix, piece, step) == b"".join(parts)


def test_hinted_output_comes_in_step_pieces_in_order_from_threads():
    parts = [random.Random(i).randbytes(MEMBER_SIZE) if i % 2 else bytes([i]) * MEMBER_SIZE
             for i in range(6)]
    blob = b"".join(gzip_member(p) for p in parts)
    inf, out, seen = GzipInflater(step=1 << 16), bytearray(), set()
    for i in range(0, len(blob), 1 << 20):
        for chunk, n in inf.feed(blob[i:i + (1 << 20)]):
            assert chunk is not None and len(chunk) == n <= 1 << 16
            out += chunk
            seen.update(t.name for t in inflater_threads())
    inf.close()
    assert out == b"".join(parts) and seen and inf.members == 6


def test_no_inflater_threads_are_left():
    blob = b"".join(gzip_member(os.urandom(300000)) for _ in range(8))
    inf = GzipInflater()
    list(inf.feed(blob[:-1000]))                 # mid-member: work may be queued
    with pytest.raises(XVAFormatError):
        inf.close()                              # cut short, and the threads are stopped
    assert not inflater_threads()
    inf = GzipInflater()
    list(inf.feed(blob))                         # complete: handed out and stopped
    assert not inflater_threads()
    inf.close()
    inf = GzipInflater(step=1 << 10)
    gen = inf.feed(blob)
    next(gen)
    gen.close()                                  # the caller stopped half way
    assert not inflater_threads()


@pytest.mark.parametrize("total,must_refuse", [
    (lambda n, nxt: n - 1, False),                # too short
    (lambda n, nxt: n // 2, False),               # into the middle of the data
    (lambda n, nxt: n + 1, False),                # too long: into the next member
    (lambda n, nxt: n + nxt, True),               # two members as one: ISIZE looks right
])
@pytest.mark.parametrize("seed", [5, 685])
def test_a_lying_hint_never_gives_wrong_data(total, must_refuse, seed):
    """Refused, or (when the bytes where ISIZE should be claim more than a member may hold)
    read step by step, correctly. A refusal names the first thing found wrong: the member cut
    by the hint does not inflate, or the bytes after it are no gzip member (seed 685: a hint
    into the middle finds a small false ISIZE there, as ~1 random member in 700 does)."""
    data = [random.Random(seed).randbytes(200000), b"next " * 50000, b"end" * 30000]
    first, second = gzip_member(data[0]), gzip_member(data[1])
    bad = rehint(first, total(len(first), len(second)))
    for piece in (1000, 1 << 30):
        try:
            out = inflate(bad + second + gzip_member(data[2]), piece)
        except XVAFormatError as e:
            assert e.code == "IMPORT_ERROR" and ("corrupt gzip data" in str(e)
                                                 or "is not gzip" in str(e)), e
        else:
            assert not must_refuse and out == b"".join(data)


def test_a_hint_past_the_end_is_premature_eof():
    member = gzip_member(os.urandom(100000))
    with pytest.raises(XVAFormatError) as e:
        inflate(rehint(member, len(member) + 5000), 4096)
    assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"


def test_a_hinted_member_with_a_bad_crc_or_isize_is_refused():
    member = bytearray(gzip_member(os.urandom(100000)))
    for at in (-8, -1):
        bad = bytearray(member)
        bad[at] ^= 1
        with pytest.raises(XVAFormatError, match="corrupt gzip data"):
            inflate(bytes(bad), 1 << 20)


def test_truncated_hinted_streams_are_premature_eof():
    blob = gzip_member(os.urandom(100000)) + gzip_member(b"x" * 100000)
    for cut in (1, 5, 19, 21, 1000, len(blob) // 2, len(blob) - 1):
        with pytest.raises(XVAFormatError) as e:
            inflate(blob[:cut], 333)
        assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"


def test_the_bomb_cap_holds_with_a_hint():
    # ISIZE beyond what our writers make: step by step, as without a hint
    bomb = gzip_member(b"A" * (HINT_MAX_OUT + 1))
    sizes = []
    for _, n in GzipInflater(step=1 << 16).feed(bomb):
        assert not inflater_threads()
        sizes.append(n)
    assert max(sizes) <= 1 << 16 and sum(sizes) == HINT_MAX_OUT + 1
    # ISIZE within the cap but past the caller's limit: step by step too
    inf = GzipInflater(step=1 << 16, limit=1 << 20)
    pieces = inf.feed(gzip_member(b"B" * (2 << 20)))
    for _, n in itertools.islice(pieces, 20):
        assert n <= 1 << 16 and not inflater_threads()
    pieces.close()
    # a lying ISIZE: inflation stops one byte past it
    bomb = bytearray(gzip_member(b"C" * (64 << 20)))
    bomb[-4:] = (1000).to_bytes(4, "little")
    with pytest.raises(XVAFormatError, match="corrupt gzip data"):
        inflate(bytes(bomb), 1 << 20)
    assert not inflater_threads()


# --- data that does not compress is stored ------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 65535, 65536, 3 * 65535, MEMBER_SIZE])
def test_stored_members_are_gzip_of_a_size_known_in_advance(n, tmp_path):
    data = os.urandom(n)
    member = stored_member(data)
    assert len(member) == stored_size(n)
    assert int.from_bytes(member[16:20], "little") == len(member)
    assert gzip.decompress(member) == data
    assert inflate(member, 4093) == data and inflate(member, 1 << 30) == data
    path = tmp_path / "stored.gz"
    path.write_bytes(member + gzip_member(b"tail" * 1000))
    for tool in (["gunzip", "-c"], ["pigz", "-dc"]):
        out = subprocess.run([*tool, str(path)], check=True, capture_output=True).stdout
        assert out == data + b"tail" * 1000


def test_only_data_that_does_not_compress_is_stored():
    noise = os.urandom(MEMBER_SIZE)
    text = (b"the quick brown fox jumps over the lazy dog %d\n" * 100000)[:MEMBER_SIZE]
    assert incompressible(noise) and not incompressible(text)
    assert gzip_member(noise) == stored_member(noise)
    assert len(gzip_member(text)) < MEMBER_SIZE // 4
    # one sample that shrinks is enough: a piece that is half text is deflated whole
    half = noise[: MEMBER_SIZE // 2] + text[: MEMBER_SIZE // 2]
    assert not incompressible(half)
    assert gzip.decompress(gzip_member(half)) == half
    # level 0 means isal's own fast level, never the store test; small pieces are deflated
    assert not incompressible(noise[:1000])
    assert gzip.decompress(gzip_member(noise, level=0)) == noise


@pytest.mark.parametrize("cuts", [[], [1], [65535], [65534, 65536, 65537], [5000, 5000 + 131070],
                                  list(range(1, 300_000, 4099))])
def test_members_framed_from_pieces_equal_members_of_the_joined_bytes(cuts):
    data = os.urandom(300_000) + b"text that compresses " * 20000
    noise = data[:300_000]
    for whole in (noise, data):
        bounds = [0, *[c for c in cuts if c < len(whole)], len(whole)]
        pieces = [whole[a:b] for a, b in zip(bounds, bounds[1:])]
        views = [memoryview(p) for p in pieces] + [b""]
        assert stored_member(views) == stored_member(whole)
        assert incompressible(views) == incompressible(whole)
        assert gzip_member(views) == gzip_member(whole)
        assert gzip.decompress(gzip_member(views)) == whole
    assert stored_member([]) == stored_member(b"") and gzip.decompress(stored_member([])) == b""
