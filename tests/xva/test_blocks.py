import hashlib
import io
import tarfile

import pytest
import xxhash

from xva.blocks import BLOCK_SIZE, BlockWriter, checksum_hex
from xva.errors import XVAFormatError
from xva.events import LAYOUT_XAPI, Warning_
from xva.tar import TAR_END, tar_header, tar_padding

from .conftest import read_events

XML = b"<value><struct><member><name>version</name><value>2</value></member></struct></value>"


def member(name, data):
    return tar_header(name, len(data)) + data + tar_padding(len(data))


def block(ref, n, data, ext=".xxhash", digest=None):
    digest = digest if digest is not None else checksum_hex(ext, data).encode()
    return member(f"{ref}/{n:08d}", data) + member(f"{ref}/{n:08d}{ext}", digest)


def xva(*parts):
    return member("ova.xml", XML) + b"".join(parts) + TAR_END


def test_checksum_formats():
    assert checksum_hex(".xxhash", b"abc") == xxhash.xxh64(b"abc", seed=0).hexdigest().upper()
    assert checksum_hex(".checksum", b"abc") == hashlib.sha1(b"abc").hexdigest()


def test_writer_skips_zero_blocks_but_keeps_first_and_last():
    size = 10 * BLOCK_SIZE + 5
    pieces = [(3 * BLOCK_SIZE + 7, b"data"), (5 * BLOCK_SIZE, bytes(BLOCK_SIZE))]
    data = b"".join(BlockWriter(XML).stream([("Ref:9", size, pieces), ("Ref:10", 0, [])]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert tar.extractfile("Ref:9/00000003.xxhash").read() == checksum_hex(
            ".xxhash", bytes(7) + b"data" + bytes(BLOCK_SIZE - 11)).encode()
        assert tar.extractfile("Ref:9/00000010").read() == bytes(5)
    assert names == ["ova.xml", "Ref:10/00000000", "Ref:10/00000000.xxhash",
                     "Ref:9/00000000", "Ref:9/00000000.xxhash", "Ref:9/00000003",
                     "Ref:9/00000003.xxhash", "Ref:9/00000010", "Ref:9/00000010.xxhash"]
    meta, images, _ = read_events(data, disks={"Ref:9": size, "Ref:10": 0})
    assert meta.layout == LAYOUT_XAPI and meta.ova_xml == XML
    assert images["Ref:9"].read(3 * BLOCK_SIZE, 20) == bytes(7) + b"data" + bytes(9)
    assert images["Ref:9"].size == size and images["Ref:9"].data_bytes <= 64 * 1024


def test_counter_rule_with_keep_alive_blocks():
    a, b = b"A" * BLOCK_SIZE, b"B" * 100
    data = xva(block("Ref:1", 0, a), block("Ref:1", 1, b""), block("Ref:1", 2, b""),
               block("Ref:1", 5, a), block("Ref:1", 6, b))
    # keep-alives 1 and 2 move nothing; 5 skips 5-2-1 = 2 blocks: A at 1 MiB*3
    size = 4 * BLOCK_SIZE + 100
    _, images, _ = read_events(data, disks={"Ref:1": size})
    img = images["Ref:1"]
    assert img.read(0, 4) == b"AAAA" and img.read(3 * BLOCK_SIZE, 4) == b"AAAA"
    assert img.read(BLOCK_SIZE, 2 * BLOCK_SIZE) == bytes(2 * BLOCK_SIZE)
    assert img.read(4 * BLOCK_SIZE, 100) == b


@pytest.mark.parametrize("parts,disks,code", [
    ([block("Ref:1", 0, b"x" * 10)], {"Ref:1": 5}, "IMPORT_ERROR"),                # beyond size
    ([block("Ref:2", 0, b"x" * 10)], {"Ref:1": 10}, "IMPORT_ERROR_FAILED_TO_FIND_OBJECT"),
    ([member("Ref:1/00000000", b"x" * 10), member("Ref:1/00000001", b"x")], {"Ref:1": 11},
     "IMPORT_ERROR_UNEXPECTED_FILE"),                                           # no checksum
    ([member("Ref:1/00000000", b"x" * 10)], {"Ref:1": 10}, "IMPORT_ERROR_UNEXPECTED_FILE"),
    ([block("Ref:1", 0, b"x" * 10, digest=b"0" * 16)], {"Ref:1": 10}, "IMPORT_ERROR"),
    ([block("Ref:1", 1, b"x" * 10), block("Ref:1", 1, b"x" * 10)], {"Ref:1": 20},
     "IMPORT_ERROR_UNEXPECTED_FILE"),                                           # not increasing
    ([block("Ref:1", 0, b"x" * 10)], {"Ref:1": 20}, "IMPORT_ERROR"),                # short disk
    ([block("Ref:1", 0, b"x" * 10)], {"Ref:1": 10, "Ref:2": 5}, "IMPORT_ERROR"),    # missing disk
    ([member("Ref:1/notes", b"hi")], {"Ref:1": 10}, "IMPORT_ERROR_UNEXPECTED_FILE"),
])
def test_broken_block_streams_are_refused(parts, disks, code):
    with pytest.raises(XVAFormatError) as e:
        read_events(xva(*parts), disks=disks)
    assert e.value.code == code


def test_force_turns_checksum_mismatch_into_a_warning():
    data = xva(block("Ref:1", 0, b"x" * 10, ext=".checksum", digest=b"f" * 40))
    _, images, others = read_events(data, disks={"Ref:1": 10}, force=True)
    assert bytes(images["Ref:1"]) == b"x" * 10
    assert any(isinstance(e, Warning_) and "mismatch" in e.message for e in others)


@pytest.mark.parametrize("compression,magic", [("gzip", b"\x1f\x8b"),
                                               ("zstd", b"\x28\xb5\x2f\xfd")])
def test_compressed_stream_round_trip(compression, magic):
    pieces = [(0, b"first"), (2 * BLOCK_SIZE + 3, b"x" * (3 * BLOCK_SIZE))]
    size = 6 * BLOCK_SIZE
    data = b"".join(BlockWriter(XML, compression=compression, checksum="sha1")
                    .stream([("Ref:3", size, pieces)]))
    assert data.startswith(magic)
    _, images, _ = read_events(data, piece=4096, disks={"Ref:3": size})
    assert images["Ref:3"].read(0, 5) == b"first"
    assert images["Ref:3"].read(2 * BLOCK_SIZE, 3 * BLOCK_SIZE + 6) == (
        bytes(3) + b"x" * (3 * BLOCK_SIZE) + bytes(3))
