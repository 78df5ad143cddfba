import gzip
import io
import tarfile

import pytest

from xva.appliance import CHUNK_SIZE, Appliance, ApplianceWriter, VDISpec
from xva.errors import XVAFormatError
from xva.events import LAYOUT_APPLIANCE
from xva.gz import gzip_member, zero_gzip
from xva.tar import TAR_END, tar_header, tar_padding

from .conftest import appliance, read_events

GUIDE_XML = b"""<?xml version="1.0" ?>
<appliance version="0.1">
  <vm name="vm">
  <label>
 very simple Debian VM
  </label>
  <shortdesc>
 the description field can contain any valid UTF-8
 </shortdesc>
 <config mem_set="536870912" vcpus="1"/>
 <hacks is_hvm="false" kernel_boot_cmdline="root=/dev/sda1 ro ">
 <!--temporary-->
  </hacks>
  <vbd device="sda" function="root" mode="w" vdi="vdi_sda"/>
  <vbd device="sdb" function="swap" mode="w" vdi="vdi_sdb"/>
  </vm>
  <vdi name="vdi_sda" size="5368709120" source="file://sda" type="dir-gzipped-chunks"/>
  <vdi name="vdi_sdb" size="536870912" source="file://sdb" type="dir-gzipped-chunks"/>
</appliance>"""


def test_parses_the_guides_example():
    a = Appliance.from_xml(GUIDE_XML)
    assert a.vm.label == "very simple Debian VM"
    assert a.vm.shortdesc == "the description field can contain any valid UTF-8"
    assert (a.vm.mem_set, a.vm.vcpus, a.vm.is_hvm) == (536870912, 1, False)
    assert a.vm.kernel_boot_cmdline == "root=/dev/sda1 ro "
    assert [v.directory for v in a.vdis] == ["sda", "sdb"]
    assert Appliance.from_xml(a.to_xml()) == a


@pytest.mark.parametrize("mutate", [
    lambda x: x.replace(b'source="file://sda"', b'source="file://../sda"'),
    lambda x: x.replace(b'source="file://sda"', b'source="http://evil/sda"'),
    lambda x: x.replace(b'source="file://sda"', b'source="file:///etc"'),
    lambda x: x.replace(b'vdi="vdi_sdb"', b'vdi="nope"'),
    lambda x: x.replace(b'size="536870912"', b'size="-1"'),
    lambda x: x.replace(b'mode="w" vdi="vdi_sda"', b'mode="rw" vdi="vdi_sda"'),
    lambda x: x.replace(b'type="dir-gzipped-chunks"/>\n  <vdi name="vdi_sdb"',
                        b'type="raw"/>\n  <vdi name="vdi_sdb"'),
    lambda x: x.replace(b'version="0.1"', b'version="0.2"'),
    lambda x: x.replace(b"<config", b"<nothing"),
])
def test_bad_metadata_is_refused(mutate):
    with pytest.raises(XVAFormatError):
        Appliance.from_xml(mutate(GUIDE_XML))


def stream(app, sources, **kw):
    return b"".join(ApplianceWriter(app, **kw).stream(sources))


def test_round_trip_in_memory_crossing_chunk_boundaries():
    size = 2 * CHUNK_SIZE + 777
    pieces = [(0, b"boot" * 1000), (CHUNK_SIZE - 10, b"across-the-chunk-edge"),
              (size - 3, b"end")]
    app = appliance({"sda": size, "sdb": 0})
    data = stream(app, {"vdi_sda": pieces})
    meta, images, others = read_events(data, piece=100000)
    assert meta.layout == LAYOUT_APPLIANCE and meta.appliance == app
    img = images["vdi_sda"]
    assert img.size == size
    for off, d in pieces:
        after = min(5, size - off - len(d))
        assert img.read(off - 5, len(d) + 5 + after) == bytes(5) + d + bytes(after)
    assert img.data_bytes < 200000                 # the rest came as zero spans
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        chunk2 = tar.extractfile("sda/chunk-00000002.gz").read()
    assert names == ["ova.xml", "sda", "sda/chunk-00000000.gz", "sda/chunk-00000001.gz",
                     "sda/chunk-00000002.gz", "sdb"]
    assert gzip.decompress(chunk2) == bytes(774) + b"end"


def hand_made(chunks: dict[str, bytes], size: int) -> bytes:
    app = Appliance.from_xml(appliance({"sda": size}).to_xml())
    xml = app.to_xml()
    out = tar_header("ova.xml", len(xml)) + xml + tar_padding(len(xml))
    for name, blob in chunks.items():
        out += tar_header(name, len(blob)) + blob + tar_padding(len(blob))
    return out + TAR_END


def test_any_digit_count_in_numeric_order():
    half = zero_gzip(CHUNK_SIZE // 2)
    data = hand_made({"sda/chunk-0.gz": half + half,
                      "sda/chunk-000000001.gz": gzip_member(b"xyz")}, CHUNK_SIZE + 3)
    _, images, _ = read_events(data, piece=1 << 20)
    assert images["vdi_sda"].read(CHUNK_SIZE, 3) == b"xyz"


@pytest.mark.parametrize("chunks,size", [
    ({"sda/chunk-00000000.gz": gzip_member(b"x" * 5000)}, 4000),               # bomb
    ({"sda/chunk-00000000.gz": gzip_member(b"x" * 3000)}, 4000),               # short
    ({"sda/chunk-00000001.gz": gzip_member(b"x" * 4000)}, 4000),               # out of order
    ({"sda/chunk-00000000.gz": gzip_member(b"x" * 4000),
      "sda/chunk-00000001.gz": gzip_member(b"x")}, 4000),                     # extra
    ({}, 4000),                                                                # missing
    ({"sda/chunk-00000000.gz": gzip_member(b"x" * 4000)[:-3]}, 4000),          # truncated
    ({"sda/chunk-00000000.gz": gzip_member(b"x" * 4000), "sdz/f": b"1"}, 4000),  # stray file
    ({"sda/notes.txt": b"hi"}, 4000),
])
def test_broken_disk_data_is_refused(chunks, size):
    with pytest.raises(XVAFormatError):
        read_events(hand_made(chunks, size))


def test_a_small_gzip_declaring_a_huge_output_stops_at_the_declared_size():
    bomb = gzip_member(b"\1" * (64 << 20))                   # ~64 KiB expanding to 64 MiB
    with pytest.raises(XVAFormatError) as e:
        read_events(hand_made({"sda/chunk-00000000.gz": bomb}, 1 << 20), piece=len(bomb) + 5000)
    assert "more data than the declared size" in str(e.value)


def test_a_hinted_member_past_the_declared_size_is_refused():
    member = gzip_member(b"\2" * (3 << 20))                  # hinted, ISIZE within the cap
    with pytest.raises(XVAFormatError) as e:
        read_events(hand_made({"sda/chunk-00000000.gz": member}, 1 << 20),
                    piece=len(member) + 5000)
    assert "more data than the declared size" in str(e.value)
