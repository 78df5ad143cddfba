"""File adapters, and interop with real tools: tar, gunzip, xva-img."""

import filecmp
import os
import shutil
import subprocess
import threading

import pytest

from xva.appliance import CHUNK_SIZE
from xva.errors import XVACancelled, XVAIOError
from xva.events import LAYOUT_APPLIANCE, LAYOUT_XAPI
from xva.files import (data_extents, export_appliance, export_blocks, import_stream, shared_extents,
                       sparse_pieces)

from .conftest import appliance, make_disk

XML = b"<value><struct/></value>"
need = pytest.mark.skipif


def chunks_of(path, piece=65536):
    with open(path, "rb") as f:
        while data := f.read(piece):
            yield data


def write(export, path):
    with open(path, "wb") as f:
        for piece in export:
            assert len(piece) <= 1 << 20
            f.write(piece)
    assert export.done == export.total and export.progress == 1.0


def assert_same_sparse(a, b):
    subprocess.run(["cmp", str(a), str(b)], check=True)
    assert os.stat(b).st_size == os.stat(a).st_size
    assert os.stat(b).st_blocks <= os.stat(a).st_blocks + 256      # holes stayed holes


def test_extents_skip_holes(tmp_path):
    disk = make_disk(tmp_path / "d", 8 << 20, extents=[(1 << 20, 5000), (6 << 20, 100)])
    fd = os.open(disk, os.O_RDONLY)
    try:
        ext = data_extents(fd)
        assert sum(n for _, n in ext) < 1 << 20
        pieces = list(sparse_pieces(fd, extents=ext))
        assert pieces[0][0] <= 1 << 20 and pieces[-1][0] <= 6 << 20
    finally:
        os.close(fd)


def test_appliance_round_trip_sparse_and_tar_layout(tmp_path):
    size = CHUNK_SIZE + (3 << 20)              # two chunks, a few MiB of real blocks
    src = make_disk(tmp_path / "src.raw", size)
    small = make_disk(tmp_path / "small.raw", 1 << 20, seed=2, extents=[(0, 100)])
    app = appliance({"sda": size, "sdb": 1 << 20})
    xva = tmp_path / "out.xva"
    write(export_appliance(app, {"vdi_sda": str(src), "vdi_sdb": str(small)}), xva)

    seen = []
    paths = import_stream(chunks_of(xva), lambda d: str(tmp_path / f"back-{d}"),
                          lambda m: seen.append(m.layout))
    assert seen == [LAYOUT_APPLIANCE]
    assert_same_sparse(src, paths["vdi_sda"])
    assert_same_sparse(small, paths["vdi_sdb"])

    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "xf", str(xva), "-C", str(out)], check=True)
    assert sorted(os.listdir(out)) == ["ova.xml", "sda", "sdb"]
    assert sorted(os.listdir(out / "sda")) == ["chunk-00000000.gz", "chunk-00000001.gz"]
    subprocess.run(f"gunzip -c sda/chunk-* | cat | cmp - {src}", shell=True, cwd=out,
                   check=True)

    # the extracted directory, tarred again by GNU tar (ova.xml first), imports the same
    again = subprocess.run(["tar", "cf", "-", "ova.xml", "sda", "sdb"], cwd=out, check=True,
                           capture_output=True).stdout
    paths = import_stream(iter([again]), lambda d: str(tmp_path / f"dir-{d}"))
    assert_same_sparse(small, paths["vdi_sdb"])


@need(shutil.which("xva-img") is None, reason="xva-img not installed")
def test_block_layout_with_xva_img_both_ways(tmp_path):
    size = (24 << 20) + 4321
    src = make_disk(tmp_path / "src.raw", size)
    xva = tmp_path / "out.xva"
    write(export_blocks(XML, [("Ref:12", str(src), size)], checksum="sha1"), xva)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "xf", str(xva), "-C", str(out)], check=True)
    subprocess.run(["xva-img", "disk-export", "Ref:12/", str(tmp_path / "img.raw")],
                   cwd=out, check=True, capture_output=True)
    assert filecmp.cmp(src, tmp_path / "img.raw", shallow=False)

    # an XVA written by xva-img (disk-import + package), read by us; xva-img drops a partial
    # last block, so this disk is whole MiBs
    size = 24 << 20
    src = make_disk(tmp_path / "src2.raw", size)
    pkg = tmp_path / "pkg"
    (pkg / "Ref:3").mkdir(parents=True)
    (pkg / "ova.xml").write_bytes(XML)
    subprocess.run(["xva-img", "disk-import", "Ref:3/", str(src)], cwd=pkg, check=True,
                   capture_output=True)
    # xva-img 1.4.2 drops the first two characters of each name: hence "./"
    subprocess.run(["xva-img", "package", str(tmp_path / "theirs.xva"), "./ova.xml", "./Ref:3"],
                   cwd=pkg, check=True, capture_output=True)
    seen = []
    paths = import_stream(chunks_of(tmp_path / "theirs.xva", 100003),
                          lambda d: str(tmp_path / "theirs.raw"),
                          lambda m: seen.append(m.layout) or {"Ref:3": size})
    assert seen == [LAYOUT_XAPI]
    assert filecmp.cmp(src, paths["Ref:3"], shallow=False)


@pytest.mark.parametrize("compression,checksum", [(None, "xxhash"), ("gzip", "xxhash"),
                                                  ("gzip", "sha1"), ("zstd", "xxhash")])
def test_block_round_trip_sparse(tmp_path, compression, checksum):
    size = (40 << 20) + 5
    a = make_disk(tmp_path / "a.raw", size)
    b = make_disk(tmp_path / "b.raw", 2 << 20, seed=3)
    xva = tmp_path / "out.xva"
    write(export_blocks(XML, [("Ref:2", str(b), 2 << 20), ("Ref:10", str(a), size)],
                        compression=compression, checksum=checksum), xva)
    paths = import_stream(chunks_of(xva), lambda d: str(tmp_path / f"back-{d[4:]}"),
                          lambda m: {"Ref:2": 2 << 20, "Ref:10": size})
    assert_same_sparse(a, paths["Ref:10"])
    assert_same_sparse(b, paths["Ref:2"])


def test_dense_appliance_export_stores_noise_without_spooling_it(tmp_path, monkeypatch):
    """Pieces that do not compress are re-read and stored when their chunk is sent, so a
    disk of such data needs no spool file; text between them is spooled (in memory, then
    in a file) and every byte comes back, in order, through our reader and gunzip."""
    import xva.appliance as appliance_mod
    size = 40 << 20
    src = tmp_path / "src.raw"
    parts = [os.urandom(12 << 20), b"text of a dense disk %d\n" * (300 << 10), os.urandom(9 << 20)]
    data = b"".join(parts)[:size]
    src.write_bytes(data + bytes(size - len(data)))
    files = []
    real = appliance_mod.tempfile.TemporaryFile

    def counted(*a, **kw):
        files.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(appliance_mod.tempfile, "TemporaryFile", counted)
    for memory, spooled in ((64 << 20, 0), (1 << 20, 1)):
        xva = tmp_path / f"out-{memory}.xva"
        files.clear()
        write(export_appliance(appliance({"sda": size}), {"vdi_sda": str(src)},
                               spool_memory=memory), xva)
        assert len(files) == spooled
        assert os.path.getsize(xva) < size - (3 << 20)          # the text was deflated
        paths = import_stream(chunks_of(xva), lambda d: str(tmp_path / f"back-{memory}"))
        subprocess.run(["cmp", str(src), paths["vdi_sda"]], check=True)
        out = tmp_path / f"x-{memory}"
        out.mkdir()
        subprocess.run(["tar", "xf", str(xva), "-C", str(out)], check=True)
        subprocess.run(f"gunzip -c sda/chunk-* | cmp - {src}", shell=True, cwd=out, check=True)


def test_a_disk_cut_short_between_the_passes_fails_the_export(tmp_path):
    size = 16 << 20
    src = tmp_path / "src.raw"
    src.write_bytes(os.urandom(size))
    export = export_appliance(appliance({"sda": size}), {"vdi_sda": str(src)})
    with pytest.raises(XVAIOError, match="changed under the export"):
        for piece in export:
            if bytes(piece[:9]) == b"sda/chunk":    # planned, sized: the disk loses its tail
                os.truncate(src, 4 << 20)
    assert export._files == []


def test_export_cancel_releases(tmp_path):
    size = 40 << 20
    src = make_disk(tmp_path / "src.raw", size, extents=[(i << 20, 1 << 20) for i in range(30)])
    export = export_appliance(appliance({"sda": size}), {"vdi_sda": str(src)})
    it = iter(export)
    next(it)
    export.cancel()
    with pytest.raises(XVACancelled) as e:
        for _ in it:
            pass
    assert e.value.error_info() == ["TASK_CANCELLED", "export cancelled"]
    assert export._files == []


@pytest.mark.parametrize("layout", ["appliance", "xapi+gzip"])
def test_a_failed_import_stops_inflater_threads_at_once(tmp_path, layout):
    """A client that goes away mid-upload makes the chunk source raise: the inflater's worker
    threads stop before import_stream returns, not when the reader is garbage-collected."""
    size = 24 << 20
    src = make_disk(tmp_path / "src.raw", size, extents=[(0, size)])
    xva = tmp_path / "in.xva"
    if layout == "appliance":
        write(export_appliance(appliance({"sda": size}), {"vdi_sda": str(src)}), xva)
    else:
        write(export_blocks(XML, [("Ref:1", str(src), size)], compression="gzip"), xva)
    data = xva.read_bytes()

    def cut_off():
        yield data[: len(data) // 2]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        import_stream(cut_off(), lambda d: str(tmp_path / f"back-{d}"),
                      lambda m: {"Ref:1": size} if m.layout == LAYOUT_XAPI else None)
    assert not [t for t in threading.enumerate() if t.name.startswith("xva-inflate")]


def test_writes_behind_land_in_order_and_a_failed_one_is_raised(tmp_path, monkeypatch):
    from xva.direct import DirectFile
    from xva.events import DiskDone, Write
    from xva.files import DiskApplier
    pieces = [os.urandom(70_000) for _ in range(40)]
    applier = DiskApplier(lambda d: str(tmp_path / d), behind=2)
    at = 0
    for piece in pieces:
        applier.apply(Write("a", at, memoryview(piece)))
        at += len(piece)
    applier.apply(DiskDone("a", at + 5))
    applier.sync()
    applier.close()
    assert (tmp_path / "a").read_bytes() == b"".join(pieces) + bytes(5)

    real, calls = DirectFile.write, []

    def failing(self, data, offset):
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(self, data, offset)
    monkeypatch.setattr(DirectFile, "write", failing)
    applier = DiskApplier(lambda d: str(tmp_path / d), behind=2)
    with pytest.raises(OSError, match="No space left"):
        for i in range(50):
            applier.apply(Write("b", i * 10, b"x" * 10))
        applier.sync()
    applier.close()
    assert len(calls) < 50 and not any(t.name == "xva-writer" for t in threading.enumerate())


def test_shared_extents_read_fiemap_and_see_no_sharing_between_copies(tmp_path):
    """A file shares every data extent with itself (FIEMAP parsed: the same places), a plain
    copy shares none (this file system copies: no reflinks), and holes are never shared.
    Reflinked copies on XFS: tests/httpd/test_vhd_http.py's reflink scenario."""
    MiB = 1 << 20
    path = tmp_path / "disk"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
        for off in (0, 6 * MiB, 15 * MiB):
            f.seek(off)
            f.write(os.urandom(MiB))
        os.fsync(f.fileno())
    copy = tmp_path / "copy"
    subprocess.run(["cp", "--reflink=never", "--sparse=always", str(path), str(copy)],
                   check=True)
    fd, cfd = os.open(path, os.O_RDONLY), os.open(copy, os.O_RDONLY)
    try:
        assert shared_extents(fd, fd, 16 * MiB) == data_extents(fd, 16 * MiB)
        assert sum(n for _, n in shared_extents(fd, fd, 16 * MiB)) == 3 * MiB
        assert shared_extents(fd, fd, 7 * MiB) == [(0, MiB), (6 * MiB, MiB)]   # clipped
        assert shared_extents(fd, cfd, 16 * MiB) == []
    finally:
        os.close(fd)
        os.close(cfd)
