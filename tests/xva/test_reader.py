import os
import random

import pytest

from xva.appliance import ApplianceWriter
from xva.blocks import BlockWriter
from xva.errors import XVAError, XVAFormatError, XVAUsageError
from xva.events import End, LAYOUT_APPLIANCE, Metadata
from xva.gz import gzip_member
from xva.reader import DirectoryReader, XVAReader

from .conftest import appliance, read_events

XML = b"<value><struct/></value>"
SIZE = 3 << 20


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


@pytest.mark.parametrize("head,message", [(b"\x28\xb5\x2f\xfd" + bytes(600), "zstd"),
                                          (b"PK\x03\x04" + bytes(600), "not an XVA")])
def test_detection_refuses_zstd_and_foreign_data(head, message):
    with pytest.raises(XVAFormatError, match=message):
        list(XVAReader().feed(head))


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


@pytest.mark.parametrize("layout", ["appliance", "blocks", "blocks-gzip"])
def test_truncated_anywhere_is_an_error(layout):
    if layout == "appliance":
        _, _, data = appliance_xva()
        disks = None
    else:
        _, data = block_xva("gzip" if layout == "blocks-gzip" else None)
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
    for base, disks in [(app_data, None), (blk, {"Ref:7": SIZE}), (blk_gz, {"Ref:7": SIZE})]:
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


def test_directory_reader_both_layouts_and_symlinks(tmp_path):
    import io
    import tarfile
    app, pieces, data = appliance_xva()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path / "a", filter="data")
    reader = DirectoryReader(tmp_path / "a")
    events = list(reader.events())
    assert events[0].layout == LAYOUT_APPLIANCE and isinstance(events[-1], End)
    written = {e.offset: bytes(e.data) for e in events if type(e).__name__ == "Write"}
    assert written[SIZE - 10][-10:] == b"0123456789"

    blk_pieces, blk = block_xva()
    with tarfile.open(fileobj=io.BytesIO(blk)) as tar:
        tar.extractall(tmp_path / "b", filter="data")
    reader = DirectoryReader(tmp_path / "b")
    out = []
    for e in reader.events():
        if isinstance(e, Metadata):
            reader.expect_disks({"Ref:7": SIZE})
        out.append(e)
    assert isinstance(out[-1], End)

    os.rename(tmp_path / "b" / "Ref:7" / "00000000", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / "b" / "Ref:7" / "00000000")
    reader = DirectoryReader(tmp_path / "b")
    with pytest.raises(XVAFormatError, match="symlink"):
        for e in reader.events():
            if isinstance(e, Metadata):
                reader.expect_disks({"Ref:7": SIZE})

    os.symlink("/etc", tmp_path / "c")
    with pytest.raises(XVAFormatError):
        list(DirectoryReader(tmp_path / "a" / "sda" / ".." / ".." / "c").events())
