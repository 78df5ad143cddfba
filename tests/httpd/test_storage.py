"""The file SR's sparse copies and its failure paths (ENOSPC on a real small filesystem)."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from httpd.model.errors import XenAPIError
from httpd.core.filesr import FileSR, copy_sparse
from xva.files import data_extents


def _sparse(path, size, chunks):
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off, data in chunks:
            fh.seek(off)
            fh.write(data)


def test_extents_and_sparse_copy(tmp_path):
    src = tmp_path / "src"
    _sparse(src, 64 * 2**20, [(0, b"a" * 4096), (32 * 2**20, os.urandom(2**20))])
    fd = os.open(src, os.O_RDONLY)
    extents = list(data_extents(fd, 64 * 2**20))
    os.close(fd)
    assert extents[0][0] == 0 and sum(n for _, n in extents) <= 2 * 2**20
    dst = tmp_path / "dst"
    copy_sparse(str(src), str(dst), 64 * 2**20)
    assert dst.read_bytes() == src.read_bytes()
    assert os.stat(dst).st_blocks * 512 <= 3 * 2**20


@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_enospc_mid_copy_leaves_no_file(tmp_path, tiny_fs):
    src = tmp_path / "big"
    _sparse(src, 16 * 2**20, [(0, os.urandom(8 * 2**20))])
    with pytest.raises(OSError) as e:
        copy_sparse(str(src), str(tiny_fs / "out.raw"), 16 * 2**20)
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(tiny_fs) == []


def test_sr_full_is_refused_before_writing(tmp_path, tiny_fs):
    sr = FileSR(tiny_fs)
    src = tmp_path / "big"
    _sparse(src, 16 * 2**20, [(0, os.urandom(8 * 2**20))])
    with pytest.raises(XenAPIError) as e:
        sr.copy_from(src, "copy", 16 * 2**20)
    assert e.value.code == "SR_FULL"
    with pytest.raises(XenAPIError) as e:
        sr.create("huge", 2**40)
    assert e.value.code == "SR_FULL"
    assert os.listdir(tiny_fs) == []
    sr.create("ok", 2**20)
    assert sr.scan() == {"ok": (2**20, 0)}       # (size, allocated): a hole
    with pytest.raises(XenAPIError):
        sr.vdi_path("../escape")


def test_side_files_of_cut_uploads_are_swept_at_start(fresh_server):
    """An upload writes `<vdi>.raw.part` beside the VDI; a crash leaves it: the next start
    removes it and nothing else."""
    x = fresh_server.session().xenapi
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "user", "name_label": "v"})
    pbd = x.SR.get_PBDs(sr)[0]
    path = os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")
    with open(path + ".part", "wb") as f:
        f.write(b"half an upload")
    fresh_server.kill9()
    fresh_server.start()
    assert not os.path.exists(path + ".part") and os.path.exists(path)


def test_a_snapshots_digests_go_with_it_and_orphans_are_swept(tmp_path):
    """A snapshot's copy gets its block digests beside it (`.<name>.raw.digests`, not a VDI for
    scan); destroy removes them; at start, digests of a file that is gone and half-written
    ones are swept, a VDI's kept."""
    sr = FileSR(tmp_path)
    _sparse(tmp_path / "a.raw", 8 * 2**20, [(2**20, b"data")])
    sr.copy_from(tmp_path / "a.raw", "snap", 8 * 2**20, digest=True)
    sr.copy_from(tmp_path / "a.raw", "plain", 8 * 2**20)
    digests = tmp_path / ".snap.raw.digests"
    assert digests.exists() and not (tmp_path / ".plain.raw.digests").exists()
    assert sorted(sr.scan()) == ["a", "plain", "snap"]
    (tmp_path / ".gone.raw.digests").write_bytes(b"x")
    (tmp_path / ".snap.raw.digests.123.tmp").write_bytes(b"x")
    (tmp_path / ".digest-seed.123.tmp").write_bytes(b"x")
    assert sorted(sr.sweep_side_files()) == [".digest-seed.123.tmp", ".gone.raw.digests",
                                             ".snap.raw.digests.123.tmp"]
    assert digests.exists() and len((tmp_path / ".digest-seed").read_bytes()) == 8
    sr.destroy("snap")
    assert not digests.exists() and not (tmp_path / "snap.raw").exists()
