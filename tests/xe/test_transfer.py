"""vm-export / vm-import: the client side against a test double of the HTTP-transfer protocol
(`protocol_double.XapiDouble`), plus an integration round trip against the real server."""

from __future__ import annotations

import asyncio
import io
import os
import shlex
import signal
import tarfile

import pytest

from httpd.xe.transfer import Progress
from httpd.xe.xvadir import tar_size, tar_stream

from .conftest import XE, xe_env
from .protocol_double import NEW_UUID, SR_UUID, VM_UUID, XapiDouble


@pytest.fixture
async def double():
    d = await XapiDouble(os.urandom(3 * 2**20 + 12345)).start()
    yield d
    await d.stop()


async def axe(env, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        *XE, *args, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out, err.decode()


async def test_export_to_file(double, tmp_path):
    target = tmp_path / "vm.xva"
    rc, out, err = await axe(xe_env(tmp_path), *double.args(), "vm-export", f"uuid={VM_UUID}",
                             f"filename={target}", "compress=zstd")
    assert rc == 0, err
    assert target.read_bytes() == double.payload
    assert err == "" and out == b""            # not a terminal: no progress bar
    q = double.export_query
    assert q["uuid"] == VM_UUID and q["use_compression"] == "zstd" and q["task_id"]
    assert double.tasks == {}                   # the client destroyed its task
    assert double.calls[-1] == "session.logout"


async def test_export_by_name(double, tmp_path):
    target = tmp_path / "vm.xva"
    rc, _, err = await axe(xe_env(tmp_path), *double.args(), "vm-export", "vm=exported",
                           f"filename={target}")
    assert rc == 0, err
    assert target.stat().st_size == len(double.payload)


async def test_export_stdout_import_stdin_round_trip(double, tmp_path):
    xe = " ".join(shlex.quote(a) for a in [*XE, *double.args()])
    cmd = (f"set -o pipefail; {xe} vm-export uuid={VM_UUID} filename=- | "
           f"{xe} vm-import filename=- sr-uuid={SR_UUID} --force")
    proc = await asyncio.create_subprocess_shell(
        cmd, executable="/bin/bash", env=xe_env(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == NEW_UUID
    assert double.imported == double.payload
    assert double.import_headers.get("Transfer-Encoding") == "chunked"
    assert double.import_query["sr_uuid"] == SR_UUID
    assert double.import_query["force"] == "true" and double.import_query["restore"] == "false"


async def test_import_file_with_length(double, tmp_path):
    src = tmp_path / "in.xva"
    src.write_bytes(double.payload)
    rc, out, err = await axe(xe_env(tmp_path), *double.args(), "vm-import",
                             f"filename={src}", "preserve=true")
    assert rc == 0, err
    assert out.decode().strip() == NEW_UUID
    assert double.imported == double.payload
    assert double.import_headers["Content-Length"] == str(len(double.payload))
    assert double.import_query["restore"] == "true"


def _xva_dir(root):
    root.mkdir()
    (root / "ova.xml").write_text('<appliance version="0.1"><vm name="vm"/></appliance>')
    for disk in ("sda", "sdb"):
        (root / disk).mkdir()
        for n in range(2):
            (root / disk / f"chunk-{n:08d}.gz").write_bytes(os.urandom(1000 + 700 * n))
    return root


async def test_import_directory_as_tar_stream(double, tmp_path):
    src = _xva_dir(tmp_path / "appliance")
    rc, out, err = await axe(xe_env(tmp_path), *double.args(), "vm-import", f"filename={src}")
    assert rc == 0, err
    assert double.import_headers["Content-Length"] == str(len(double.imported))
    with tarfile.open(fileobj=io.BytesIO(double.imported)) as tar:
        names = tar.getnames()
        assert names[0] == "ova.xml"
        assert sorted(names) == sorted(["ova.xml"] + [f"{d}/chunk-{n:08d}.gz"
                                                      for d in ("sda", "sdb") for n in range(2)])
        for name in names:
            assert tar.extractfile(name).read() == (src / name).read_bytes()


async def test_import_directory_refuses_symlinks(double, tmp_path):
    """A symlink inside an XVA directory is refused, never followed (it could name any file
    the user can read); nothing is sent."""
    src = _xva_dir(tmp_path / "linked")
    secret = tmp_path / "secret"
    secret.write_bytes(b"not for the server")
    (src / "sda" / "chunk-00000002.gz").symlink_to(secret)
    rc, out, err = await axe(xe_env(tmp_path), *double.args(), "vm-import", f"filename={src}")
    assert rc == 1 and "symbolic link" in err
    assert double.imported is None or b"not for the server" not in double.imported


def test_tar_stream_size_matches(tmp_path):
    src = _xva_dir(tmp_path / "a")
    data = b"".join(tar_stream(src))
    assert len(data) == tar_size(src)


async def test_import_failure_reported(tmp_path):
    d = await XapiDouble(b"", import_error=["IMPORT_ERROR", "checksum mismatch"]).start()
    try:
        src = tmp_path / "bad.xva"
        src.write_bytes(b"x" * 1000)
        rc, out, err = await axe(xe_env(tmp_path), *d.args(), "vm-import", f"filename={src}")
        assert rc == 1 and out == b""
        assert "The VM could not be imported." in err and "checksum mismatch" in err
    finally:
        await d.stop()


async def test_export_bad_password_and_bad_uuid(double, tmp_path):
    rc, _, err = await axe(xe_env(tmp_path), *double.args("nope"), "vm-export",
                           f"uuid={VM_UUID}", f"filename={tmp_path / 'x'}")
    assert rc == 1 and "authentication failed" in err
    rc, _, err = await axe(xe_env(tmp_path), *double.args(), "vm-export",
                           "uuid=00000000-0000-0000-0000-000000000000",
                           f"filename={tmp_path / 'x'}")
    assert rc == 1 and "The uuid you supplied was invalid." in err
    assert not (tmp_path / "x").exists()


async def test_ctrl_c_cancels_the_task(tmp_path):
    d = await XapiDouble(os.urandom(8 * 2**20), delay=0.05).start()
    try:
        target = tmp_path / "slow.xva"
        proc = await asyncio.create_subprocess_exec(
            *XE, *d.args(), "vm-export", f"uuid={VM_UUID}", f"filename={target}",
            env=xe_env(tmp_path), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # as a terminal's xe: a suite started in the background has SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        await asyncio.wait_for(d.export_started.wait(), 30)
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 130, err
        assert "cancelled" in err.decode()
        assert "task.cancel" in d.calls
        assert not target.exists()             # no half-written export left behind
    finally:
        await d.stop()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only():
    tty = _Tty()
    p = Progress("Exporting x", 10 * 2**20, stream=tty)
    p.update(5 * 2**20)
    p.finish()
    text = tty.getvalue()
    assert "Exporting x [###############---------------]  50% 5.0 MiB/10.0 MiB" in text
    assert "iB/s ETA " in text and text.endswith("\n")
    quiet = io.StringIO()
    p = Progress("Exporting x", 100, stream=quiet)
    p.update(100)
    p.finish()
    assert quiet.getvalue() == ""
    unknown = _Tty()
    p = Progress("Importing", None, stream=unknown)
    p.update(2048)
    p.finish()
    assert "2.0 KiB" in unknown.getvalue()


# --- against the real server ---------------------------------------------------------------------

@pytest.mark.parametrize("compress", ["false", "zstd"])
def test_round_trip_real_server_identical_disks(xe, xenapi, tmp_path, compress):
    import hashlib
    import subprocess
    vm = xenapi.xenapi.VM.create({"name_label": "to-export", "power_state": "Halted"})
    u = xenapi.xenapi.VM.get_uuid(vm)
    vdi = xe.out("vm-disk-add", f"uuid={u}", "disk-size=4MiB", "device=0")
    rec = xenapi.xenapi.VDI.get_record(xenapi.xenapi.VDI.get_by_uuid(vdi))
    sr = xenapi.xenapi.SR.get_uuid(rec["SR"])
    path = xe.server.data_dir / "sr" / sr / f"{rec['location']}.raw"
    data = os.urandom(4 * 2**20)
    path.write_bytes(data)
    xva = tmp_path / "sent.xva"
    cmd = (f"set -o pipefail; {' '.join(XE)} vm-export uuid={u} filename=- compress={compress}"
           f" | tee {xva} | {' '.join(XE)} vm-import filename=-")
    r = subprocess.run(["bash", "-c", cmd], env=xe.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    if compress == "zstd":          # xapi's layout as one zstd stream, as xapi sends it
        assert xva.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    new = r.stdout.strip()
    assert new and new != u
    vdi2 = xe.out("vbd-list", f"vm-uuid={new}", "params=vdi-uuid", "--minimal")
    loc2 = xe.out("vdi-param-get", f"uuid={vdi2}", "param-name=location")
    sr2 = xe.out("vdi-param-get", f"uuid={vdi2}", "param-name=sr-uuid")
    copy = (xe.server.data_dir / "sr" / sr2 / f"{loc2}.raw").read_bytes()
    assert hashlib.sha256(copy).digest() == hashlib.sha256(data).digest()
