"""HTTP VM export/import with real curl, tar, gunzip and xva-img (issue 4 acceptance)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import tarfile
import time

import pytest

from tests.xva.conftest import rle_frame


def _template(x, name="Debian Etch 4.0"):
    return next(r for r, v in x.VM.get_all_records().items() if v["name_label"] == name)


def _disk_path(x, vdi):
    pbd = x.SR.get_PBDs(x.VDI.get_SR(vdi))[0]
    return os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")


def _url(server, path):
    return server.url.replace("http://", f"http://root:{server.password}@") + path


def _curl(*args, check=True):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, check=check)


def _state(x):
    """What an import must not leave behind when it fails."""
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    path = os.path.dirname(_disk_path(x, x.SR.get_VDIs(sr)[0])) if x.SR.get_VDIs(sr) else None
    return (sorted(x.VM.get_all()), sorted(x.VDI.get_all()), sorted(x.VBD.get_all()),
            sorted(x.VIF.get_all()), sorted(os.listdir(path)) if path else None)


def _wait_task(x, task, timeout=30):
    deadline = time.time() + timeout
    while x.task.get_status(task) in ("pending", "cancelling") and time.time() < deadline:
        time.sleep(0.05)
    return x.task.get_record(task)


@pytest.fixture(scope="module")
def source_vm(server):
    """A provisioned VM with a second disk holding scattered random data."""
    x = server.session().xenapi
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    # small disks: the guide's format gzips every zero byte, so 4 GiB of holes cost seconds
    vm = x.VM.create({"name_label": "export-source", "name_description": "for transfers",
                      "memory_static_max": str(2**28), "VCPUs_max": "1"})
    root = x.VDI.create({"SR": sr, "virtual_size": str(16 * 2**20), "type": "system",
                         "name_label": "root"})
    with open(_disk_path(x, root), "r+b") as fh:
        fh.seek(2**20)
        fh.write(open("/etc/services", "rb").read())
    x.VBD.create({"VM": vm, "VDI": root, "userdevice": "0", "mode": "RW", "type": "Disk",
                  "bootable": True})
    data_vdi = x.VDI.create({"SR": sr, "virtual_size": str(48 * 2**20), "type": "user",
                             "name_label": "data"})
    with open(_disk_path(x, data_vdi), "r+b") as fh:
        for off in (0, 5 * 2**20 + 123, 47 * 2**20):
            fh.seek(off)
            fh.write(os.urandom(300_000 if off < 47 * 2**20 else 2**20))
    x.VBD.create({"VM": vm, "VDI": data_vdi, "userdevice": "1", "mode": "RW", "type": "Disk"})
    net = x.network.get_all()[0]
    x.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "02:11:22:33:44:55"})
    return vm


def _disks(x, vm):
    out = {}
    for vbd in x.VM.get_VBDs(vm):
        vdi = x.VBD.get_VDI(vbd)
        with open(_disk_path(x, vdi), "rb") as fh:
            out[x.VBD.get_userdevice(vbd)] = fh.read()
    return out


def test_export_writes_xapis_block_layout_by_default(server, source_vm, tmp_path):
    """Without `format`, /export is what every current xapi writes (Xen Orchestra's full
    backups ask for it so); `use_compression=true` gzips the whole tar, as xapi's."""
    x = server.session().xenapi
    uuid = x.VM.get_uuid(source_vm)
    plain, gz = tmp_path / "vm.xva", tmp_path / "vm.xva.gz"
    _curl(_url(server, f"/export?uuid={uuid}"), "-o", str(plain))
    _curl(_url(server, f"/export?uuid={uuid}&use_compression=true"), "-o", str(gz))
    names = tarfile.open(plain).getnames()
    assert names[0] == "ova.xml" and any(n.startswith("Ref:") for n in names)
    assert gz.read_bytes()[:2] == b"\x1f\x8b"
    assert tarfile.open(gz, "r:gz").getnames() == names


def test_a_chunked_export_is_framed_for_keep_alive(server, source_vm, tmp_path):
    """An export's body is chunked (its frames written by the agent, not aiohttp): the
    chunks add up to the file curl saves, the last chunk ends it, and the same connection
    then answers another request (a stray byte after the body would be read as its reply)."""
    import base64
    import http.client
    x = server.session().xenapi
    uuid = x.VM.get_uuid(source_vm)
    saved = tmp_path / "vm.xva"
    _curl(_url(server, f"/export?uuid={uuid}"), "-o", str(saved))
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", f"/export?uuid={uuid}", headers={"Authorization": f"Basic {auth}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Transfer-Encoding") == "chunked"
        body = resp.read()
        assert len(body) == saved.stat().st_size
        assert tarfile.open(fileobj=io.BytesIO(body)).getnames() == \
            tarfile.open(saved).getnames()
        conn.request("GET", "/", headers={"Authorization": f"Basic {auth}"})
        again = conn.getresponse()
        assert again.status == 200 and again.read()
    finally:
        conn.close()


def test_appliance_export_matches_the_guides_layout(server, source_vm, tmp_path):
    x = server.session().xenapi
    uuid = x.VM.get_uuid(source_vm)
    xva = tmp_path / "vm.xva"
    _curl(_url(server, f"/export?uuid={uuid}&format=appliance"), "-o", str(xva))
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "xf", str(xva), "-C", str(out)], check=True)
    names = tarfile.open(xva).getnames()
    assert names[0] == "ova.xml"
    ova = (out / "ova.xml").read_text()
    assert '<appliance version="0.1">' in ova and "export-source" in ova
    disks = _disks(x, source_vm)
    for device, ud in (("sda", "0"), ("sdb", "1")):
        chunks = sorted((out / device).iterdir())
        assert all(c.name.startswith("chunk-") and c.name.endswith(".gz") for c in chunks)
        raw = subprocess.run(f"gunzip -c {' '.join(str(c) for c in chunks)}", shell=True,
                             capture_output=True, check=True).stdout
        assert raw == disks[ud]
    assert "export" not in x.VM.get_current_operations(source_vm).values()


@pytest.mark.parametrize("query", ["", "&format=xapi", "&format=xapi&use_compression=true",
                                   "&format=xapi&use_compression=zstd"])
def test_export_reimport_gives_identical_disks(server, source_vm, tmp_path, query):
    x = server.session().xenapi
    uuid = x.VM.get_uuid(source_vm)
    xva = tmp_path / "vm.xva"
    _curl(_url(server, f"/export?uuid={uuid}{query}"), "-o", str(xva))
    r = _curl("-T", str(xva), "-D", "-", _url(server, "/import"))
    head = r.stdout.decode()
    assert " 200 " in head
    task = next(line.split(": ")[1].strip() for line in head.splitlines()
                if line.lower().startswith("task-id"))
    rec = x.task.get_record(task)
    assert rec["status"] == "success"
    assert rec["result"].startswith("<value><array><data><value>OpaqueRef:")
    new = rec["result"].split("<value>")[2].split("</value>")[0]
    assert x.VM.get_name_label(new) == "export-source"
    assert x.VM.get_current_operations(new) == {} and "start" in x.VM.get_allowed_operations(new)
    assert _disks(x, new) == _disks(x, source_vm)
    for vbd in x.VM.get_VBDs(new):   # written sparse: holes stayed holes
        vdi = x.VBD.get_VDI(vbd)
        assert os.stat(_disk_path(x, vdi)).st_blocks * 512 < 4 * 2**20
    if "xapi" in query:
        assert len(x.VM.get_VIFs(new)) == 1
        assert x.VIF.get_MAC(x.VM.get_VIFs(new)[0]) != "02:11:22:33:44:55"
    x.VM.destroy(new)


def test_restore_keeps_macs_and_chunked_upload(server, source_vm, tmp_path):
    x = server.session().xenapi
    # a copy of the source whose record is gone when it comes back (restore keeps its uuid)
    gone = x.VM.create({"name_label": "restore-me", "memory_static_max": str(2**28),
                        "VCPUs_max": "1"})
    x.VIF.create({"VM": gone, "network": x.network.get_all()[0], "device": "0",
                  "MAC": "02:11:22:33:44:55"})
    uuid = x.VM.get_uuid(gone)
    xva = tmp_path / "vm.xva"
    _curl(_url(server, f"/export?uuid={uuid}&format=xapi"), "-o", str(xva))
    for vif in x.VM.get_VIFs(gone):
        x.VIF.destroy(vif)
    x.VM.destroy(gone)
    # chunked transfer: curl -T - reads stdin
    r = subprocess.run(f"cat {xva} | curl -sS -T - -D - '{_url(server, '/import?restore=true')}'",
                       shell=True, capture_output=True, check=True)
    new = r.stdout.decode().strip().splitlines()[-1]
    assert x.VIF.get_MAC(x.VM.get_VIFs(new)[0]) == "02:11:22:33:44:55"
    assert x.VM.get_uuid(new) == uuid
    x.VM.destroy(new)


def _need(tool):
    if not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (make test installs it)")


def _export_to(server, vm, query, path):
    """curl /export of `vm` with `query` into `path`."""
    uuid = server.session().xenapi.VM.get_uuid(vm)
    _curl(_url(server, f"/export?uuid={uuid}{query}"), "-o", str(path))
    return path


def _import_one(server, path):
    """curl -T an XVA; the new VM's ref (the task must have succeeded)."""
    r = _curl("-T", str(path), _url(server, "/import"))
    new = r.stdout.decode().strip()
    assert new.startswith("OpaqueRef:"), r
    return new


def test_zstd_export_is_what_the_zstd_cli_reads(server, source_vm, tmp_path):
    """use_compression=zstd (no format: it implies the block layout) is one zstd stream that
    `zstd -t` accepts and `zstd -dc | tar t` lists; it imports back to identical disks."""
    _need("zstd")
    x = server.session().xenapi
    xva = _export_to(server, source_vm, "&use_compression=zstd", tmp_path / "vm.xva.zst")
    assert xva.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    subprocess.run(["zstd", "-q", "-t", str(xva)], check=True)
    names = subprocess.run(f"zstd -dc {xva} | tar t", shell=True, capture_output=True,
                           check=True, text=True).stdout.split()
    assert names[0] == "ova.xml" and any(n.endswith("/00000000.xxhash") for n in names)
    new = _import_one(server, xva)
    assert _disks(x, new) == _disks(x, source_vm)
    x.VM.destroy(new)


@pytest.mark.parametrize("tool", [["zstd", "-q", "-c", "-19", "-T2"],
                                  ["pzstd", "-q", "-c", "-p", "2"]])
def test_xva_compressed_by_the_zstd_cli_imports(server, source_vm, tmp_path, tool):
    """Our plain block export, compressed by zstd (one frame) or pzstd (several frames with
    skippable ones between), imports to identical disks."""
    _need(tool[0])
    x = server.session().xenapi
    plain = _export_to(server, source_vm, "&format=xapi", tmp_path / "vm.xva")
    packed = tmp_path / "vm.xva.zst"
    with open(plain, "rb") as src, open(packed, "wb") as dst:
        subprocess.run(tool, stdin=src, stdout=dst, check=True)
    new = _import_one(server, packed)
    assert _disks(x, new) == _disks(x, source_vm)
    x.VM.destroy(new)


def _unpacked_block_export(server, vm, tmp_path):
    """The VM's block-layout export (SHA-1, for Debian's xva-img), `tar x`ed: (dir, Ref:N names)."""
    xva = _export_to(server, vm, "&format=xapi&checksum=sha1", tmp_path / "vm.xva")
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["tar", "xf", str(xva), "-C", str(out)], check=True)
    return out, sorted(p.name for p in out.iterdir() if p.name.startswith("Ref:"))


def test_block_layout_with_xva_img(server, source_vm, tmp_path):
    """xva-img (Debian's, SHA-1 only) unpacks our block export to identical disks."""
    _need("xva-img")
    x = server.session().xenapi
    out, refs = _unpacked_block_export(server, source_vm, tmp_path)
    assert refs
    disks = sorted(_disks(x, source_vm).values(), key=len)
    got = []
    for ref in refs:
        raw = tmp_path / f"{ref}.raw"
        subprocess.run(["xva-img", "-p", "disk-export", f"{out}/{ref}/", str(raw)], check=True,
                       capture_output=True)
        got.append(raw.read_bytes())
    assert sorted(got, key=len) == disks


def test_xva_img_package_imports(server, source_vm, tmp_path):
    """An XVA packed by xva-img (from our unpacked export) imports to identical disks."""
    _need("xva-img")
    x = server.session().xenapi
    work, refs = _unpacked_block_export(server, source_vm, tmp_path)
    subprocess.run(["xva-img", "-p", "package", str(tmp_path / "packed.xva"), "./ova.xml",
                    *[f"./{r}" for r in refs]], cwd=work, check=True, capture_output=True)
    new = _import_one(server, tmp_path / "packed.xva")
    assert x.VM.get_name_label(new) == "export-source"
    assert _disks(x, new) == _disks(x, source_vm)
    x.VM.destroy(new)


def test_metadata_round_trip(server, source_vm, tmp_path):
    x = server.session().xenapi
    meta = tmp_path / "meta.xva"
    _curl(_url(server, f"/export_metadata?uuid={x.VM.get_uuid(source_vm)}"), "-o", str(meta))
    assert tarfile.open(meta).getnames() == ["ova.xml"]
    r = _curl("-T", str(meta), _url(server, "/import_metadata"))
    new = r.stdout.decode().strip()
    assert x.VM.get_name_label(new) == "export-source"
    old_vdis = sorted(x.VBD.get_VDI(b) for b in x.VM.get_VBDs(source_vm))
    assert sorted(x.VBD.get_VDI(b) for b in x.VM.get_VBDs(new)) == old_vdis   # shared disks
    for vbd in x.VM.get_VBDs(new):
        x.VBD.destroy(vbd)
    x.VM.destroy(new)


def test_export_of_a_running_vm_is_refused(server):
    x = server.session().xenapi
    vm = x.VM.clone(_template(x), "running-export")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    try:
        r = _curl("-D", "-", "-o", "/dev/null", _url(server, f"/export?uuid={x.VM.get_uuid(vm)}"))
        head = r.stdout.decode()
        assert " 409 " in head and "VM_BAD_POWER_STATE" in head
        task = next(line.split(": ")[1].strip() for line in head.splitlines()
                    if line.lower().startswith("task-id"))
        assert x.task.get_error_info(task)[0] == "VM_BAD_POWER_STATE"
    finally:
        x.VM.hard_shutdown(vm)


def test_credentials_and_bad_parameters(server):
    assert b" 401 " in _curl("-D", "-", "-o", "/dev/null", server.url + "/export?uuid=x").stdout
    r = _curl("-D", "-", "-o", "/dev/null", "-u", "root:wrong", server.url + "/export?uuid=x")
    assert b" 401 " in r.stdout and b"WWW-Authenticate: Basic" in r.stdout
    r = _curl("-D", "-", "-o", "/dev/null", _url(server, "/export?uuid=nope"))
    assert b" 404 " in r.stdout and b"UUID_INVALID" in r.stdout
    r = _curl("-D", "-", "-o", "/dev/null", _url(server, "/export?ref=OpaqueRef:nope"))
    assert b" 404 " in r.stdout and b"HANDLE_INVALID" in r.stdout
    r = _curl("-D", "-", "-o", "/dev/null", _url(server, "/export"))
    assert b" 400 " in r.stdout
    vm = server.session().xenapi.VM.get_all()[0]
    for bad in ("use_compression=lz4", "use_compression=zstd&format=appliance"):
        r = _curl("-D", "-", "-o", "/dev/null", _url(server, f"/export?ref={vm}&{bad}"))
        assert b" 400 " in r.stdout and b"INVALID_VALUE" in r.stdout, bad
    before = _state(server.session().xenapi)
    r = _curl("-D", "-", "-X", "PUT", "--data-binary", "", _url(server, "/import"))
    assert b" 200 " in r.stdout     # Xen Orchestra's empty probe: nothing happens
    assert _state(server.session().xenapi) == before
    r = _curl("-D", "-", "-T", "/dev/null", _url(server, "/import?sr_uuid=nope"))
    assert b" 404 " in r.stdout and b"UUID_INVALID" in r.stdout
    # session_id in the query, trailing slash
    x = server.session()
    vm_uuid = x.xenapi.VM.get_uuid(x.xenapi.VM.get_by_name_label("demo")[0])
    r = _curl("-o", "/dev/null", "-w", "%{http_code}",
              f"{server.url}/export_metadata/?uuid={vm_uuid}&session_id={x.handle}")
    assert r.stdout == b"200"


def _tar(members: list[tuple[str, bytes]], kind=tarfile.REGTYPE) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_OVA = (b'<?xml version="1.0"?><appliance version="0.1"><vm name="v"><label>hostile</label>'
        b'<shortdesc/><config mem_set="268435456" vcpus="1"/>'
        b'<vbd device="sda" function="root" mode="w" vdi="vdi_sda"/></vm>'
        b'<vdi name="vdi_sda" size="1048576" source="file://sda" type="dir-gzipped-chunks"/>'
        b'</appliance>')


def _hostile_inputs(tmp_path, server, source_vm) -> dict[str, bytes]:
    good_chunk = gzip.compress(b"x" * 2**20)
    bomb = gzip.compress(b"\0" * (64 * 2**20))      # 64 MiB for a 1 MiB disk
    entity = (b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "boom">]>'
              b'<appliance version="0.1"><vm name="&e;"/></appliance>')
    x = server.session().xenapi
    xva = tmp_path / "good.xva"
    _curl(_url(server, f"/export?uuid={x.VM.get_uuid(source_vm)}&format=xapi"), "-o", str(xva))
    good = xva.read_bytes()
    corrupt = bytearray(good)
    # flip a byte inside the first data block (not ova.xml): only its checksum can tell
    block = next(m for m in tarfile.open(xva) if m.name.endswith("/00000000"))
    corrupt[block.offset_data + 600] ^= 0xFF
    zst = subprocess.run(["zstd", "-q", "-c"], input=good, capture_output=True,
                         check=True).stdout
    # zstd: ova.xml, then 4 GiB of "A" (128 KiB of RLE blocks) where a tar header belongs
    zstd_bomb = subprocess.run(["zstd", "-q", "-c"], input=_tar([("ova.xml", _OVA)])[:1024],
                               capture_output=True, check=True).stdout + rle_frame(0x41, 32768)
    return {
        "dotdot": _tar([("ova.xml", _OVA), ("../evil", b"x")]),
        "absolute": _tar([("ova.xml", _OVA), ("/etc/evil", b"x")]),
        "entities": _tar([("ova.xml", entity)]),
        "bomb": _tar([("ova.xml", _OVA), ("sda/chunk-00000000.gz", bomb)]),
        "missing chunk": _tar([("ova.xml", _OVA)]),
        "extra chunk": _tar([("ova.xml", _OVA), ("sda/chunk-00000000.gz", good_chunk[:0] +
                                                  gzip.compress(b"y" * 2**20)),
                             ("sda/chunk-00000001.gz", good_chunk)]),
        "truncated": good[: len(good) // 2],
        "zstd truncated": zst[: len(zst) // 2],
        "zstd bomb": zstd_bomb,
        "checksum": bytes(corrupt),
        "garbage": os.urandom(100_000),
        "not an xva": b"hello",
    }


def _allocated(server) -> dict[str, int]:
    """The files of the agent's SRs and its spool, with the bytes each has on disk (not the
    file system's free space: other tests write to it meanwhile)."""
    return {str(p): p.stat().st_blocks * 512 for d in ("sr", "spool")
            for p in (server.data_dir / d).rglob("*") if p.is_file()}


def test_hostile_inputs_leave_nothing(server, source_vm, tmp_path):
    x = server.session().xenapi
    for name, body in _hostile_inputs(tmp_path, server, source_vm).items():
        path = tmp_path / "in.xva"       # on the same file system: written before measuring
        path.write_bytes(body)
        before = _state(x)
        files_before = _allocated(server)
        r = _curl("-D", "-", "-T", str(path), _url(server, "/import"), check=False)
        head = r.stdout.decode()
        assert " 200 " not in head.split("\r\n\r\n")[-2 if "100 Continue" in head else 0], name
        task = next((line.split(": ")[1].strip() for line in head.splitlines()
                     if line.lower().startswith("task-id")), None)
        assert task, name
        rec = x.task.get_record(task)
        assert rec["status"] == "failure", (name, rec)
        assert rec["error_info"][0].startswith("IMPORT_"), (name, rec["error_info"])
        if name == "checksum":
            assert "checksum" in " ".join(rec["error_info"]).lower()
        if name == "zstd truncated":
            assert rec["error_info"] == ["IMPORT_ERROR_PREMATURE_EOF"], rec["error_info"]
        assert _state(x) == before, name
        assert _allocated(server) == files_before, name     # no file left, none grown


def test_force_ignores_checksum_mismatch(server, source_vm, tmp_path):
    body = _hostile_inputs(tmp_path, server, source_vm)["checksum"]
    path = tmp_path / "c.xva"
    path.write_bytes(body)
    r = _curl(_url(server, "/import?force=true"), "-T", str(path))
    new = r.stdout.decode().strip()
    x = server.session().xenapi
    assert x.VM.get_power_state(new) == "Halted"
    x.VM.destroy(new)


def test_cancel_and_disconnect_finish_the_task(server, source_vm, tmp_path):
    x = server.session().xenapi
    # cancel: a task created first, cancelled before the body finishes
    task = x.task.create("import to cancel", "")
    before = _state(x)
    proc = subprocess.Popen(
        ["curl", "-sS", "-T", "-", _url(server, f"/import?task_id={task}")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    xva = tmp_path / "vm.xva"
    _curl(_url(server, f"/export?uuid={x.VM.get_uuid(source_vm)}"), "-o", str(xva))
    data = xva.read_bytes()
    proc.stdin.write(data[:200_000])
    proc.stdin.flush()
    time.sleep(0.5)
    x.task.cancel(task)
    time.sleep(0.3)
    try:
        proc.stdin.write(data[200_000:400_000])
        proc.stdin.close()
    except BrokenPipeError:
        pass
    proc.wait(20)
    rec = _wait_task(x, task)
    assert rec["status"] == "cancelled" and rec["error_info"][0] == "TASK_CANCELLED"
    assert _state(x) == before
    # a client that goes away half-way
    import base64
    import socket
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"PUT /import HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                 f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:300_000])
    time.sleep(0.5)
    sock.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        pending = [r for r in x.task.get_all_records().values()
                   if r["name_label"] == "VM import" and r["status"] == "pending"]
        if not pending:
            break
        time.sleep(0.1)
    assert not pending
    imports = sorted((r for r in x.task.get_all_records().values()
                      if r["name_label"] == "VM import"), key=lambda r: r["created"])
    assert imports[-1]["status"] == "failure"
    assert imports[-1]["error_info"][0] in ("VDI_IO_ERROR", "IMPORT_ERROR_PREMATURE_EOF")
    assert _state(x) == before


@pytest.mark.parametrize("kind", ["xva", "raw"])
def test_cancel_reaches_an_upload_whose_client_stalls(server, source_vm, tmp_path, kind):
    """The loop reads the body, so task.cancel acts while the client sends nothing more (a
    worker blocked on the socket would wait for the next chunk forever)."""
    import base64
    import socket
    x = server.session().xenapi
    if kind == "xva":
        xva = tmp_path / "vm.xva"
        _curl(_url(server, f"/export?uuid={x.VM.get_uuid(source_vm)}"), "-o", str(xva))
        data, path = xva.read_bytes(), "/import?"
    else:
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        target = x.VDI.create({"SR": sr, "virtual_size": str(4 * 2**20), "type": "user",
                               "name_label": "stalled raw target"})
        data, path = os.urandom(4 * 2**20), f"/import_raw_vdi?vdi={target}&"
    task = x.task.create("stalled upload", "")
    before = _state(x)
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    try:
        sock.sendall(f"PUT {path}task_id={task} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Length: {len(data)}\r\n\r\n"
                     .encode() + data[:300_000])
        time.sleep(0.5)
        assert x.task.get_status(task) == "pending"
        x.task.cancel(task)
        rec = _wait_task(x, task, timeout=10)
        assert rec["status"] == "cancelled" and rec["error_info"][0] == "TASK_CANCELLED"
        assert _state(x) == before
    finally:
        sock.close()
    if kind == "raw":
        x.VDI.destroy(target)


def test_raw_vdi_round_trip(server, source_vm, tmp_path):
    x = server.session().xenapi
    vdi = x.VBD.get_VDI([b for b in x.VM.get_VBDs(source_vm)
                         if x.VBD.get_userdevice(b) == "1"][0])
    raw = tmp_path / "d.raw"
    r = subprocess.run(["wget", "-q", "-O", str(raw),
                        _url(server, f"/export_raw_vdi?vdi={x.VDI.get_uuid(vdi)}&format=raw")])
    assert r.returncode == 0
    assert raw.read_bytes() == open(_disk_path(x, vdi), "rb").read()
    r = _curl("-T", str(raw), _url(server, "/import_raw_vdi?format=raw"))
    new = r.stdout.decode().strip()
    assert open(_disk_path(x, new), "rb").read() == raw.read_bytes()
    assert os.stat(_disk_path(x, new)).st_blocks * 512 < 4 * 2**20
    too_big = tmp_path / "big.raw"
    too_big.write_bytes(b"\1" * (48 * 2**20 + 1))
    r = _curl("-D", "-", "-T", str(too_big), _url(server, f"/import_raw_vdi?vdi={new}"),
              check=False)
    assert b"VDI_IO_ERROR" in r.stdout
    x.VDI.destroy(new)


def test_kill_during_import_is_swept_at_start(fresh_server, tmp_path):
    x = fresh_server.session().xenapi
    vm = x.VM.get_by_name_label("demo")[0]
    xva = tmp_path / "vm.xva"
    _curl(_url(fresh_server, f"/export?uuid={x.VM.get_uuid(vm)}"), "-o", str(xva))
    before = _state(x)
    proc = subprocess.Popen(["curl", "-sS", "-T", "-", _url(fresh_server, "/import")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    data = xva.read_bytes()
    proc.stdin.write(data[:len(data) // 2])
    proc.stdin.flush()
    deadline = time.time() + 10
    while time.time() < deadline and len(x.VDI.get_all()) == len(before[1]):
        time.sleep(0.05)
    assert len(x.VDI.get_all()) > len(before[1])      # the import is under way
    fresh_server.kill9()
    proc.kill()
    fresh_server.start()
    x = fresh_server.session().xenapi
    assert _state(x) == before


def test_an_export_is_named_after_its_vm_for_browsers():
    """Content-Disposition (the web page's export link saves the file so): ASCII in
    filename, the name as it is in filename* (RFC 6266)."""
    from httpd.web.transfer import attachment
    assert attachment("demo", "xva") == ("attachment; filename=\"demo.xva\"; "
                                         "filename*=UTF-8''demo.xva")
    assert attachment('dé"mo/../x', "xva") == (
        "attachment; filename=\"d_mo_.._x.xva\"; filename*=UTF-8''d%C3%A9%22mo%2F..%2Fx.xva")
    assert attachment("", "xva").startswith('attachment; filename="export.xva"')
