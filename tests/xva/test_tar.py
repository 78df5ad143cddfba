import io
import tarfile

import pytest

from xva.errors import XVAFormatError
from xva.tar import (TAR_END, MemberData, MemberEnd, MemberStart, TarReader, safe_name,
                     tar_header, tar_padding)


def build(members, fmt=tarfile.USTAR_FORMAT) -> bytes:
    """A tar made by the standard library, so the reader is checked against a real peer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def info(name, size=0, type=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name)
    ti.size, ti.type = size, type
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def collect(data: bytes, piece: int):
    r = TarReader()
    members, cur = [], None
    for i in range(0, len(data), piece):
        for ev in r.feed(data[i:i + piece]):
            if isinstance(ev, MemberStart):
                cur = [ev.name, ev.directory, bytearray()]
            elif isinstance(ev, MemberData):
                cur[2] += ev.data
            elif isinstance(ev, MemberEnd):
                members.append((cur[0], cur[1], bytes(cur[2])))
    r.close()
    return members


@pytest.mark.parametrize("piece", [1, 7, 512, 513, 100000])
@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_reads_stdlib_tars_fed_in_any_piece_size(piece, fmt):
    long = "d" * 80 + "/" + "x" * 90         # ustar prefix, GNU longname, pax path
    data = build([(info("ova.xml", 5), b"hello"), (info("d", type=tarfile.DIRTYPE), None),
                  (info("d/empty"), b""), (info("./d/big", 1500), bytes(range(256)) * 5 + b"z" * 220),
                  (info(long, 3), b"abc")], fmt)
    got = collect(data, piece)
    assert got == [("ova.xml", False, b"hello"), ("d", True, b""), ("d/empty", False, b""),
                   ("d/big", False, bytes(range(256)) * 5 + b"z" * 220), (long, False, b"abc")]


def test_writer_headers_read_back_by_stdlib():
    data = (tar_header("ova.xml", 3) + b"abc" + tar_padding(3) + tar_header("sda", 0, directory=True)
            + tar_header("sda/chunk-00000000.gz", 600) + b"q" * 600 + tar_padding(600) + TAR_END)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = [(m.name, m.type, m.size) for m in tar.getmembers()]
        assert tar.extractfile("ova.xml").read() == b"abc"
    assert names == [("ova.xml", tarfile.REGTYPE, 3), ("sda", tarfile.DIRTYPE, 0),
                     ("sda/chunk-00000000.gz", tarfile.REGTYPE, 600)]
    assert collect(data, 100)[2][2] == b"q" * 600


@pytest.mark.parametrize("member", [
    info("../evil", 1), info("/etc/passwd", 1), info("a/../../b", 1),
    info("link", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    info("hard", type=tarfile.LNKTYPE, linkname="ova.xml"),
    info("dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    info("blk", type=tarfile.BLKTYPE), info("fifo", type=tarfile.FIFOTYPE),
    info("../d", type=tarfile.DIRTYPE),
])
def test_hostile_members_are_refused(member):
    data = build([(member, b"x" if member.size else None)])
    with pytest.raises(XVAFormatError) as e:
        collect(data, 512)
    assert e.value.code == "IMPORT_ERROR"


def test_safe_name_normalises():
    assert safe_name("./a//b/./c") == "a/b/c"
    for bad in ("", ".", "..", "/a", "a/..", "a\\b", "a\0b"):
        with pytest.raises(XVAFormatError):
            safe_name(bad)


def test_truncation_anywhere_is_premature_eof():
    data = (tar_header("ova.xml", 700) + b"a" * 700 + tar_padding(700) + tar_header("x", 3)
            + b"abc" + tar_padding(3) + TAR_END)
    for cut in list(range(0, len(data), 97)) + [len(data) - 512, len(data) - 1]:
        r = TarReader()
        r.feed(data[:cut])
        with pytest.raises(XVAFormatError) as e:
            r.close()
        assert e.value.code == "IMPORT_ERROR_PREMATURE_EOF"


def test_bad_checksum_header_and_error_state_is_sticky():
    hdr = bytearray(tar_header("ova.xml", 1))
    hdr[0] ^= 1
    r = TarReader()
    with pytest.raises(XVAFormatError):
        r.feed(bytes(hdr))
    with pytest.raises(XVAFormatError):
        r.feed(b"")
    with pytest.raises(XVAFormatError):
        r.close()


def test_data_after_end_is_ignored_but_lone_zero_block_is_not():
    r = TarReader()
    r.feed(TAR_END + b"garbage")
    assert r.done
    r.close()
    r = TarReader()
    with pytest.raises(XVAFormatError):
        r.feed(bytes(512) + tar_header("x", 0))


def _pax_size(value: str) -> bytes:
    t = tarfile.TarInfo("ova.xml")
    t.pax_headers = {"size": value}
    return build([(t, b"")], fmt=tarfile.PAX_FORMAT)


@pytest.mark.parametrize("value", ["\u00b2", "\u0663", "9" * 5000, "-1", " 12", ""])
def test_a_bad_pax_size_is_a_format_error(value):
    """Issue 14 item 9: "²" passes str.isdigit(), 5,000 digits overflow int(): both raised
    ValueError (a 500) before; only XVAFormatError may escape."""
    with pytest.raises(XVAFormatError, match="pax"):
        collect(_pax_size(value), 512)


def test_a_negative_base256_size_is_a_format_error():
    block = bytearray(tar_header("disk", 0))
    block[124:136] = b"\xff" * 12                  # base-256, all ones: -1
    block[148:156] = b" " * 8                      # the checksum over the changed block
    block[148:156] = b"%06o\0 " % sum(block)
    with pytest.raises(XVAFormatError, match="size"):
        collect(bytes(block) + bytes(1024), 512)
