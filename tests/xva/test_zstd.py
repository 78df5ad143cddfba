import os
import shutil
import subprocess

import pytest
import zstandard

from xva.errors import XVAFormatError
from xva.zstd import BLOCK_MAX, ZSTD_MAGIC, ParallelZstd, ZstdInflater, zstd_frame

from .conftest import rle_frame, skippable

DATA = os.urandom(200_000) + b"xva text " * 60_000 + bytes(3 << 20) + os.urandom(1000)


def inflate(data: bytes, piece: int, step: int = 1 << 16, **kw) -> bytes:
    inf, out = ZstdInflater(step, **kw), bytearray()
    for i in range(0, len(data), piece):
        for chunk, n in inf.feed(data[i:i + piece]):
            assert n == len(chunk) <= step
            out += chunk
    inf.close()
    return bytes(out)


def compress(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def test_round_trip_any_piece_size():
    blob = zstd_frame(DATA)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA
    for piece in (333, 65536, len(blob)):
        assert inflate(blob, piece) == DATA
    small = compress(DATA[:150_000], level=1)
    assert inflate(small, 1) == DATA[:150_000]


def test_concatenated_and_skippable_frames():
    parts = [DATA[:100_000], DATA[100_000:100_001], b"", DATA[100_001:]]
    blob = b"".join(compress(p, level=1, write_checksum=i % 2 == 0, write_content_size=i < 2)
                    for i, p in enumerate(parts))
    blob = skippable(b"hint") + blob + skippable(b"") + compress(b"end")
    assert inflate(blob, 4097) == DATA + b"end"


@pytest.mark.skipif(not shutil.which("pzstd"), reason="pzstd not installed")
def test_pzstd_and_zstd_cli_output():
    """Interop: what the zstd tools write (pzstd: skippable frames ahead of each frame)."""
    for cmd in (["pzstd", "-q", "-p", "2", "-c"], ["zstd", "-q", "-c", "--rsyncable", "-T2"],
                ["zstd", "-q", "-c", "--long=27"]):
        blob = subprocess.run(cmd, input=DATA * 3, capture_output=True, check=True).stdout
        assert inflate(blob, 100_003, step=1 << 20) == DATA * 3, cmd


def test_a_bomb_is_inflated_a_step_at_a_time():
    bomb = rle_frame(0x41, 32768)                       # 128 KiB that inflate to 4 GiB
    inf = ZstdInflater(step=1 << 20)
    pieces = inf.feed(bomb)
    for _ in range(5):
        chunk, n = next(pieces)
        assert n <= 1 << 20 and chunk == b"A" * n
    pieces.close()
    assert inf.bytes_out <= 6 << 20
    # small steps: still never more than one 128 KiB block per call
    inf = ZstdInflater(step=1000)
    sizes = [n for _, n in inf.feed(rle_frame(0, 3))]
    assert max(sizes) <= 1000 and sum(sizes) == 3 * BLOCK_MAX


def test_truncated_is_premature_eof():
    blob = compress(os.urandom(300_000), write_checksum=True) + compress(b"second")
    for cut in (1, 4, 5, 9, 1000, len(blob) - len(compress(b"second")) - 1, len(blob) - 1):
        with pytest.raises(XVAFormatError) as e:
            inflate(blob[:cut], 777)
        assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF", cut


@pytest.mark.parametrize("bad,message", [
    (b"garbage after the frame", "after the end of a zstd frame is not zstd"),
    (skippable(b"x") + b"\x1f\x8b\x08\x00 gzip is not zstd", "not zstd"),
    (ZSTD_MAGIC + b"\x08", "reserved bit"),
    (ZSTD_MAGIC + b"\x00\x38" + b"\x07\x00\x00", "reserved block type"),
    (ZSTD_MAGIC + b"\x00\x38" + b"\xf9\xff\x7f", "above 128 KiB"),
    (ZSTD_MAGIC + b"\x01\x38\x2a", "dictionary"),
    (ZSTD_MAGIC + b"\x00\xa8", "window"),                       # 2 GiB: --long=31
])
def test_garbage_and_foreign_frames_are_refused(bad, message):
    with pytest.raises(XVAFormatError, match=message):
        inflate(compress(b"ok") + bad + bytes(20), 5)


def test_corrupt_block_or_checksum_is_refused():
    blob = bytearray(compress(b"hello zstd " * 1000, write_checksum=True))
    for at in (len(blob) // 2, len(blob) - 2):
        bad = bytearray(blob)
        bad[at] ^= 0x55
        with pytest.raises(XVAFormatError, match="corrupt zstd data"):
            inflate(bytes(bad), 64)


def test_frames_made_in_parallel_are_one_stream_for_zstd_and_us():
    import os
    import subprocess
    pieces = [os.urandom(300_000), DATA, b"", bytes(1 << 20), DATA[:1000]]
    pool = ParallelZstd(threads=2, depth=1)
    try:
        out = [o for p in pieces for o in pool.submit(p)] + pool.drain()
    finally:
        pool.close()
    blob = b"".join(out)
    assert len(out) == len(pieces) and all(o[:4] == ZSTD_MAGIC for o in out)
    assert inflate(blob, 65536) == b"".join(pieces)
    cli = subprocess.run(["zstd", "-dc"], input=blob, capture_output=True, check=True)
    assert cli.stdout == b"".join(pieces)
    assert len(out[0]) < 300_000 + 100          # noise: raw blocks, not an expansion


def test_pieces_that_do_not_compress_are_raw_blocks_with_size_and_checksum():
    """Random pieces (libzstd's fastest level: raw blocks) and compressible ones in one
    stream: both carry content size and checksum, and zstd -d and we read them back."""
    noise = [os.urandom(700_000), os.urandom(BLOCK_MAX + 1)]  # buffers, as tar hands them
    text = b"xva text " * 100_000
    frames = [zstd_frame(noise), zstd_frame(text), zstd_frame(noise[0])]
    for frame, n in zip(frames, (sum(map(len, noise)), len(text), len(noise[0]))):
        params = zstandard.get_frame_parameters(frame)
        assert params.content_size == n and params.has_checksum
    assert len(frames[0]) < sum(map(len, noise)) + 100 and len(frames[1]) < len(text) // 100
    blob = b"".join(frames)
    want = b"".join(noise) + text + noise[0]
    assert subprocess.run(["zstd", "-dc"], input=blob, capture_output=True,
                          check=True).stdout == want
    assert inflate(blob, 65537) == want
    corrupt = bytearray(frames[2])
    corrupt[len(corrupt) // 2] ^= 1
    with pytest.raises(XVAFormatError):
        inflate(bytes(corrupt), 65536)
    with pytest.raises(XVAFormatError):                          # cut short: refused too
        inflate(frames[2][:-5], 65536)
