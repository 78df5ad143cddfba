"""The dynamic VHD codec, checked both ways against qemu-img (Debian's qemu-utils, `-f vpc`)."""

from __future__ import annotations

import os
import random
import struct
import subprocess

import pytest

from xva.errors import XVAFormatError
from xva.events import DiskDone, Write
from xva.files import data_extents
from xva.vhd import BLOCK_SIZE, VhdReader, VhdWriter, geometry

from .conftest import make_disk

SIZE = 3 * BLOCK_SIZE + 12345 * 512          # a partial last block


def _blocks_of(path: str, size: int) -> list[int]:
    fd = os.open(path, os.O_RDONLY)
    try:
        out = set()
        for start, length in data_extents(fd, size):
            out.update(range(start // BLOCK_SIZE, (start + length - 1) // BLOCK_SIZE + 1))
        return sorted(out)
    finally:
        os.close(fd)


def _write_vhd(src: str, size: int, out: str) -> VhdWriter:
    writer = VhdWriter(size, _blocks_of(src, size))
    fd = os.open(src, os.O_RDONLY)
    try:
        with open(out, "wb") as f:
            for piece in writer.stream(lambda off, n: os.pread(fd, n, off), piece=300_000):
                f.write(piece)
    finally:
        os.close(fd)
    return writer


def _read_vhd(data: bytes, size: int, out: str, piece: int = 65536) -> int:
    reader = VhdReader("d", size)
    with open(out, "wb") as f:
        f.truncate(size)
        events = []
        for i in range(0, len(data), piece):
            events += reader.feed(data[i:i + piece])
        events += reader.close()
        for e in events:
            if isinstance(e, Write):
                f.seek(e.offset)
                f.write(e.data)
    assert isinstance(events[-1], DiskDone) and events[-1].size == reader.size
    return reader.size


def test_our_vhd_is_what_qemu_img_reads(tmp_path):
    src = make_disk(tmp_path / "disk.raw", SIZE, extents=[(0, 5000), (BLOCK_SIZE + 77, 9000),
                                                          (SIZE - 4000, 4000)])
    vhd = tmp_path / "disk.vhd"
    writer = _write_vhd(str(src), SIZE, str(vhd))
    assert writer.blocks == [0, 1, (SIZE - 4000) // BLOCK_SIZE] and os.path.getsize(vhd) == writer.total
    info = subprocess.run(["qemu-img", "info", "-f", "vpc", str(vhd)], capture_output=True,
                          text=True, check=True).stdout
    assert f"virtual size: " in info and str(SIZE) in info
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(vhd), str(back)],
                   check=True)
    assert back.read_bytes()[:SIZE] == src.read_bytes()


def test_a_vhd_qemu_img_made_imports_to_its_source(tmp_path):
    size = 5 * BLOCK_SIZE                           # qemu-img keeps the size when it is CHS-exact
    rng = random.Random(4)
    src = tmp_path / "src.raw"
    with open(src, "wb") as f:
        f.truncate(size)
        for off in (0, 2 * BLOCK_SIZE + 1000, 4 * BLOCK_SIZE + 5):
            f.seek(off)
            f.write(rng.randbytes(70_000))
    vhd = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
                    str(src), str(vhd)], check=True)
    out = tmp_path / "out.raw"
    got = _read_vhd(vhd.read_bytes(), 2 * size, str(out), piece=7777)
    assert got >= size
    assert out.read_bytes()[:size] == src.read_bytes()
    assert not any(out.read_bytes()[size:got])


def test_geometry_follows_the_specification():
    assert geometry(2**30) == (2080, 16, 63)
    c, h, s = geometry(127 * 2**30)
    assert (h, s) == (16, 255) and c * h * s * 512 <= 127 * 2**30


def _stream(tmp_path, size=SIZE) -> bytes:
    src = make_disk(tmp_path / "s.raw", size)
    _write_vhd(str(src), size, str(tmp_path / "s.vhd"))
    return (tmp_path / "s.vhd").read_bytes()


def _feed_all(data: bytes, limit: int):
    reader = VhdReader("d", limit)
    reader.feed(data)
    return reader.close()


def test_hostile_vhds_are_refused(tmp_path):
    good = _stream(tmp_path)
    bad_footer = bytearray(good)
    bad_footer[100] ^= 0xFF                                      # checksum no longer matches
    with pytest.raises(XVAFormatError, match="footer checksum"):
        _feed_all(bytes(bad_footer), SIZE)
    with pytest.raises(XVAFormatError, match="not a VHD"):
        _feed_all(b"x" * 4096, SIZE)
    with pytest.raises(XVAFormatError, match="does not fit"):
        _feed_all(good, SIZE - 512)                              # bigger than the VDI
    with pytest.raises(XVAFormatError):
        _feed_all(good[:len(good) // 2], SIZE)                   # truncated
    # a BAT entry pointing into the headers (or backwards), its header checksum kept right
    bat = bytearray(good)
    struct.pack_into(">I", bat, 1536, 1)
    with pytest.raises(XVAFormatError, match="overlap"):
        _feed_all(bytes(bat), SIZE)
    # a BAT entry past the end of the stream: the stream ends before that block
    far = bytearray(good)
    struct.pack_into(">I", far, 1536 + 4 * 2, 0x7FFFFFF0)
    with pytest.raises(XVAFormatError, match="premature|EOF|PREMATURE"):
        _feed_all(bytes(far), SIZE)
    bad_header = bytearray(good)
    bad_header[512 + 40] ^= 1
    with pytest.raises(XVAFormatError, match="header checksum"):
        _feed_all(bytes(bad_header), SIZE)
