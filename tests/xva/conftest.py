"""Shared helpers for the XVA tests: small sparse disks and in-memory import loops."""

from __future__ import annotations

import os
import random

import pytest

from xva.appliance import Appliance, VBDSpec, VDISpec, VMSpec
from xva.events import Metadata, Write, Zeros, DiskDone, End, Warning_
from xva.reader import XVAReader
from xva.zstd import BLOCK_MAX, ZSTD_MAGIC


def make_disk(path, size: int, seed: int = 0, extents=None) -> bytes:
    """A sparse file of ``size`` bytes with a few data extents; returns nothing big: the
    caller compares files.  Extents mix random and repetitive (compressible) data."""
    rng = random.Random(seed)
    if extents is None:
        extents = [(0, 3000), (size // 3, 70000), (size // 2 + 4097, 5000), (size - 9000, 9000)]
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in extents:
            f.seek(offset)
            data = rng.randbytes(length // 2) + b"xva text " * (length // 18 + 1)
            f.write(data[:length])
    return path


def appliance(sizes: dict[str, int]) -> Appliance:
    vdis = tuple(VDISpec(f"vdi_{d}", s, f"file://{d}") for d, s in sizes.items())
    vbds = tuple(VBDSpec(d, "root" if i == 0 else "data", "w", f"vdi_{d}")
                 for i, d in enumerate(sizes))
    return Appliance(VMSpec("vm", "test vm", "a description", vbds=vbds), vdis)


class Image:
    """A disk image rebuilt from events without materialising its holes."""

    def __init__(self) -> None:
        self.size = 0
        self.writes: dict[int, bytes] = {}

    def write(self, offset: int, data) -> None:
        self.writes[offset] = bytes(data)

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        for off, data in self.writes.items():
            lo, hi = max(off, offset), min(off + len(data), offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = data[lo - off:hi - off]
        return bytes(out)

    def __bytes__(self) -> bytes:
        return self.read(0, self.size)

    @property
    def data_bytes(self) -> int:
        return sum(len(d) for d in self.writes.values())


def read_events(data: bytes, piece: int = 65536, disks=None, force=False, reader=None):
    """Feed ``data`` in pieces; return (metadata, {disk: Image}, other events)."""
    reader = reader or XVAReader(force=force)
    images: dict[str, Image] = {}
    meta, others = None, []

    def take(ev):
        nonlocal meta
        if isinstance(ev, Metadata):
            meta = ev
            if disks is not None:
                reader.expect_disks(disks)
        elif isinstance(ev, Write):
            images.setdefault(ev.disk, Image()).write(ev.offset, ev.data)
        elif isinstance(ev, DiskDone):
            images.setdefault(ev.disk, Image()).size = ev.size
            others.append(ev)
        elif not isinstance(ev, Zeros):
            others.append(ev)

    for i in range(0, len(data), piece):
        for ev in reader.feed(data[i:i + piece]):
            take(ev)
    for ev in reader.close():
        take(ev)
    return meta, images, others


def rle_frame(byte: int, blocks: int, window_byte: int = 7 << 3) -> bytes:
    """A hand-made frame of RLE blocks: 4 bytes of input per 128 KiB of output."""
    out = bytearray(ZSTD_MAGIC + bytes([0, window_byte]))   # no size, no checksum
    for i in range(blocks):
        out += ((BLOCK_MAX << 3) | (1 << 1) | (i == blocks - 1)).to_bytes(3, "little")
        out.append(byte)
    return bytes(out)


def skippable(payload: bytes) -> bytes:
    return (0x184D2A53).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


@pytest.fixture
def rng():
    return random.Random(1234)
