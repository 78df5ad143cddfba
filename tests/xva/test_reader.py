import os
import random
import threading
import tracemalloc

import pytest
import zstandard

from xva.appliance import ApplianceWriter
from xva.blocks import BlockWriter
from xva.errors import XVAError, XVAFormatError, XVAUsageError
from xva.events import End, LAYOUT_APPLIANCE, Metadata
from xva.gz import gzip_member
from xva.reader import XVAReader
from xva.tar import tar_header, tar_padding

from .conftest import appliance, read_events, rle_frame, skippable

XML = b"<value><struct/></value>"
SIZE = 3 << 20
zstd = zstandard.ZstdCompressor().compress


def appliance_xva():
    app = appliance({"sda": SIZE})
    pieces = [(0, os.urandom(5000)), (SIZE // 2, b"middle" * 3000), (SIZE - 10, b"0123456789")]
    return app, pieces, b"".join(ApplianceWriter(app).stream({"vdi_sda": pieces}))


def block_xva(compression=None):
    pieces = [(100, os.urandom(3000)), (SIZE - 4, b"tail")]
    return pieces, b"".join(BlockWriter(XML, compression=compression).stream(
        [("Ref:7", SIZE, pieces)]))


def test_end_comes_at_the_tar_end_and_later_bytes_are_ignored():
    _, _, data = appliance_xva()
    reader = XVAReader()
    events = list(reader.feed(data + b"trailing junk"))
    assert isinstance(events[0], Metadata) and isinstance(events[-1], End)
    assert reader.done and reader.close() == []
    assert list(reader.feed(b"more")) == []


def test_detection_refuses_foreign_data():
    with pytest.raises(XVAFormatError, match="not an XVA"):
        list(XVAReader().feed(b"PK\x03\x04" + bytes(600)))


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_whole_stream_compression_is_detected(compression):
    pieces, data = block_xva(compression)
    reader = XVAReader()
    _, images, others = read_events(data, piece=5000, disks={"Ref:7": SIZE}, reader=reader)
    assert reader.compression == (compression or "none")
    assert images["Ref:7"].read(100, 3000) == pieces[0][1] and isinstance(others[-1], End)


def test_zstd_in_several_frames_with_garbage_between_is_refused():
    _, data = block_xva()
    cut = len(data) // 2
    frames = skippable(b"pzstd starts so") + zstd(data[:cut]) + zstd(data[cut:])
    _, images, _ = read_events(frames, piece=3000, disks={"Ref:7": SIZE})
    assert images["Ref:7"].read(SIZE - 4, 4) == b"tail"
    bad = zstd(data[:cut]) + b"junk" + zstd(data[cut:])
    with pytest.raises(XVAFormatError, match="not zstd"):
        read_events(bad, piece=3000, disks={"Ref:7": SIZE})


def test_zstd_bomb_is_refused_without_inflating_it():
    """ova.xml and one 1 MiB block as declared, then 4 GiB of "A" in 128 KiB of zstd: the
    bytes after the block must be a tar header, so the reader stops within a step or two."""
    data = zstd(tar_header("ova.xml", len(XML)) + XML + tar_padding(len(XML))
                         + tar_header("Ref:7/00000000", 1 << 20))
    bomb = data + rle_frame(0x41, 32768)
    tracemalloc.start()
    try:
        with pytest.raises(XVAFormatError):
            read_events(bomb, piece=len(bomb), disks={"Ref:7": SIZE})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


def test_errors_are_sticky_and_misuse_is_a_usage_error():
    reader = XVAReader()
    with pytest.raises(XVAFormatError):
        list(reader.feed(b"PK" + bytes(600)))
    for call in (lambda: reader.feed(b""), reader.close, lambda: reader.expect_disks({})):
        with pytest.raises(XVAFormatError):
            call()
    _, data = block_xva()
    reader = XVAReader()
    events = reader.feed(data)
    assert isinstance(next(events), Metadata)
    with pytest.raises(XVAUsageError):                 # expect_disks() was not called
        next(events)
    reader = XVAReader()
    events = reader.feed(data)
    next(events)
    with pytest.raises(XVAUsageError):                 # previous events not consumed
        reader.feed(b"")
    del events                                          # abandoned: the reader is broken
    with pytest.raises(XVAUsageError):
        reader.feed(b"")


@pytest.mark.parametrize("layout", ["appliance", "blocks", "blocks-gzip", "blocks-zstd"])
def test_truncated_anywhere_is_an_error(layout):
    if layout == "appliance":
        _, _, data = appliance_xva()
        disks = None
    else:
        _, data = block_xva(layout[7:] or None)
        disks = {"Ref:7": SIZE}
    cuts = sorted(set(random.Random(5).sample(range(len(data) - 1024), 40)
                      + [0, 1, 100, 511, 512, 513, len(data) - 1025, len(data) - 513]))
    for cut in cuts:
        with pytest.raises(XVAFormatError):
            read_events(data[:cut], piece=7000, disks=disks)


def test_fuzz_only_format_errors_escape():
    """Random corruption of valid XVAs: either the reader copes or it raises XVAFormatError."""
    rng = random.Random(99)
    _, _, app_data = appliance_xva()
    _, blk = block_xva()
    _, blk_gz = block_xva("gzip")
    _, blk_zst = block_xva("zstd")
    for base, disks in [(app_data, None), (blk, {"Ref:7": SIZE}), (blk_gz, {"Ref:7": SIZE}),
                        (blk_zst, {"Ref:7": SIZE})]:
        for _ in range(60):
            data = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                action = rng.random()
                if action < 0.6:
                    data[at] = rng.randrange(256)
                elif action < 0.8:
                    del data[at:at + rng.randint(1, 2000)]
                else:
                    data[at:at] = os.urandom(rng.randint(1, 700))
            try:
                read_events(bytes(data), piece=rng.choice([333, 4096, 65536]), disks=disks,
                            force=rng.random() < 0.3)
            except XVAFormatError:
                pass


def test_whole_stream_gzip_members_inflate_in_parallel_after_ova_xml():
    rng = random.Random(5)
    size = 24 << 20
    pieces = [(0, rng.randbytes(6 << 20)), (8 << 20, b"text of a disk " * 400000),
              (size - 5, b"tail!")]
    data = b"".join(BlockWriter(XML, compression="gzip").stream([("Ref:7", size, pieces)]))
    for piece in (1 << 20, 999999):
        _, images, others = read_events(data, piece=piece, disks={"Ref:7": size})
        image = images["Ref:7"]
        assert image.read(0, 6 << 20) == pieces[0][1] and image.read(size - 5, 5) == b"tail!"
        assert image.read(8 << 20, len(pieces[1][1])) == pieces[1][1]
        assert isinstance(others[-1], End)


def test_metadata_is_not_held_back_by_a_hinted_first_member():
    _, data = block_xva("gzip")
    first = int.from_bytes(data[16:20], "little")        # the first member's size hint
    assert first > 1000
    reader, seen = XVAReader(), []
    for ev in reader.feed(data[:first - 100]):           # the member is not complete yet
        seen.append(ev)
        if isinstance(ev, Metadata):
            reader.expect_disks({"Ref:7": SIZE})
    assert isinstance(seen[0], Metadata)


def test_a_cut_whole_stream_gzip_leaves_no_inflater_threads():
    size = 24 << 20
    data = b"".join(BlockWriter(XML, compression="gzip").stream(
        [("Ref:7", size, [(0, random.Random(6).randbytes(size))])]))
    reader = XVAReader()
    for ev in reader.feed(data[: len(data) // 2 + 12345]):
        if isinstance(ev, Metadata):
            reader.expect_disks({"Ref:7": size})
    with pytest.raises(XVAFormatError) as e:
        reader.close()
    assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"
    assert not [t for t in threading.enumerate() if t.name.startswith("xva-inflate")]
