"""VHD disk transfers over HTTP (`/export_raw_vdi?format=vhd[&base=]`,
`/import_raw_vdi?format=vhd`) with curl and qemu-img, snapshots and reverts through the SDK."""

from __future__ import annotations

import json
import os
import struct
import subprocess

import pytest
import XenAPI

from tests.scenarios import run_scenario


def _path(x, vdi):
    pbd = x.SR.get_PBDs(x.VDI.get_SR(vdi))[0]
    return os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")


def _url(server, path):
    return server.url.replace("http://", f"http://root:{server.password}@") + path


def _vdi(x, size, data=b"", at=0):
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(size), "type": "user", "name_label": "v"})
    if data:
        with open(_path(x, vdi), "r+b") as f:
            f.seek(at)
            f.write(data)
    return vdi


def _put(server, vdi, body: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", "-",
                           _url(server, f"/import_raw_vdi?vdi={vdi}&format=vhd")],
                          input=body, capture_output=True)


def _exported_by_qemu_img(server, x, src, tmp_path, fmt, qemu_fmt, kind) -> bytes:
    """Export `src` as `fmt` with curl; check its Content-Type; qemu-img's raw reading of it."""
    image = tmp_path / f"d.{fmt}"
    subprocess.run(["curl", "-sf", "-D", str(tmp_path / "h"), "-o", str(image),
                    _url(server, f"/export_raw_vdi?vdi={src}&format={fmt}")], check=True)
    assert kind in (tmp_path / "h").read_text()
    raw = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", qemu_fmt, "-O", "raw", str(image), str(raw)],
                   check=True)
    return raw.read_bytes()


def test_vhd_export_reads_in_qemu_img_and_imports_back(server, xenapi, tmp_path):
    x = xenapi.xenapi
    size = 16 * 2**20
    src = _vdi(x, size, os.urandom(3 * 2**20 + 7), at=5 * 2**20)
    back = _exported_by_qemu_img(server, x, src, tmp_path, "vhd", "vpc", "application/vhd")
    assert back[:size] == open(_path(x, src), "rb").read()
    # a VHD qemu-img made imports into an existing VDI, whose other blocks stay
    target = _vdi(x, size, b"keep me", at=15 * 2**20)
    qsrc = tmp_path / "q.raw"
    qsrc.write_bytes(os.urandom(2**20))
    qvhd = tmp_path / "q.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic",
                    str(qsrc), str(qvhd)], check=True)
    r = _put(server, target, qvhd.read_bytes())
    assert r.stdout.endswith(b"200"), r.stdout
    data = open(_path(x, target), "rb").read()
    assert data[:2**20] == qsrc.read_bytes() and data[15 * 2**20:15 * 2**20 + 7] == b"keep me"
    assert len(data) == size                                    # never truncated


def test_bad_vhds_leave_the_vdi_unchanged(server, xenapi, tmp_path):
    x = xenapi.xenapi
    size = 8 * 2**20
    src = _vdi(x, size, os.urandom(2**20))
    good = subprocess.run(["curl", "-sf", _url(server, f"/export_raw_vdi?vdi={src}&format=vhd")],
                          capture_output=True, check=True).stdout
    target = _vdi(x, size, b"old content")
    before = open(_path(x, target), "rb").read()
    footer = bytearray(good)
    footer[20] ^= 1                                              # wrong footer checksum
    bat_far = bytearray(good)
    struct.pack_into(">I", bat_far, 1536, 0x7FFFFFF0)           # a block past the end
    bigger = _vdi(x, 2 * size)
    too_big = subprocess.run(["curl", "-sf", _url(server, f"/export_raw_vdi?vdi={bigger}&format=vhd")],
                             capture_output=True, check=True).stdout
    for body, why in ((bytes(footer), b"checksum"), (bytes(bat_far), b"EOF"),
                      (good[:len(good) // 2], b"EOF"), (too_big, b"does not fit")):
        r = _put(server, target, body)
        assert not r.stdout.endswith(b"200") and why in r.stdout, r.stdout
        assert open(_path(x, target), "rb").read() == before
        assert not [n for n in os.listdir(os.path.dirname(_path(x, target)))
                    if n.endswith(".part")]
    r = subprocess.run(["curl", "-s", _url(server, f"/export_raw_vdi?vdi={src}&format=vhd"
                                                   f"&base={bigger}")], capture_output=True)
    assert b"INVALID_VALUE" in r.stdout and b"another size" in r.stdout


def test_snapshot_and_revert(server, xenapi):
    x = xenapi.xenapi
    vm = x.VM.create({"name_label": "snap me", "memory_static_max": str(2**28)})
    disk = _vdi(x, 2**20, b"first")
    x.VBD.create({"VM": vm, "VDI": disk, "userdevice": "0", "mode": "RW", "type": "Disk"})
    x.VIF.create({"VM": vm, "network": x.network.get_all()[0], "device": "0"})
    snap = x.VM.snapshot(vm, "s1")
    rec = x.VM.get_record(snap)
    assert rec["is_a_snapshot"] and rec["snapshot_of"] == vm and rec["is_a_template"]
    assert x.VM.get_snapshots(vm) == [snap]
    sdisk = x.VBD.get_VDI(rec["VBDs"][0])
    assert x.VDI.get_is_a_snapshot(sdisk) and x.VDI.get_snapshot_of(sdisk) == disk
    assert x.VIF.get_MAC(rec["VIFs"][0]) == x.VIF.get_MAC(x.VM.get_VIFs(vm)[0])
    with open(_path(x, disk), "r+b") as f:
        f.write(b"later")
    x.VM.revert(snap)
    now = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    assert open(_path(x, now), "rb").read(5) == b"first"
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.revert(vm)                                        # not a snapshot
    assert e.value.details[0] == "VM_REVERT_FAILED"
    ignored = x.VM.snapshot(vm, "no disks", [now])
    assert x.VM.get_VBDs(ignored) == []


def test_vdi_snapshot_of_one_disk(server, xenapi, tmp_path):
    x = xenapi.xenapi
    disk = _vdi(x, 4 * 2**20, b"before", at=2**20)
    snap = x.VDI.snapshot(disk, {})
    rec = x.VDI.get_record(snap)
    assert rec["is_a_snapshot"] and rec["snapshot_of"] == disk and rec["SR"] == x.VDI.get_SR(disk)
    assert x.VDI.get_snapshots(disk) == [snap] and rec["virtual_size"] == str(4 * 2**20)
    with open(_path(x, disk), "r+b") as f:
        f.seek(2**20)
        f.write(b"after!")
    assert open(_path(x, snap), "rb").read()[2**20:2**20 + 6] == b"before"
    # the snapshot is a delta's base: only the block written since comes back
    back = _exported_by_qemu_img(server, x, disk, tmp_path, "vhd", "vpc", "vhd")
    assert back[2**20:2**20 + 6] == b"after!"
    subprocess.run(["curl", "-sf", "-o", str(tmp_path / "delta.vhd"),
                    _url(server, f"/export_raw_vdi?vdi={disk}&format=vhd&base={snap}")],
                   check=True)
    mapped = subprocess.run(["qemu-img", "map", "-f", "vpc", "--output=json",
                             str(tmp_path / "delta.vhd")], check=True, capture_output=True,
                            text=True).stdout
    assert [(m["start"], m["length"]) for m in json.loads(mapped) if m["data"]] == [(0, 2**21)]
    x.VDI.destroy(snap)
    assert x.VDI.get_snapshots(disk) == []
    with pytest.raises(XenAPI.Failure) as e:
        x.VDI.snapshot("OpaqueRef:nothing", {})
    assert e.value.details[0] == "HANDLE_INVALID"


def test_qcow2_both_ways_and_a_backing_file_refused(server, xenapi, tmp_path):
    """Xen Orchestra's format for disks over 2 TiB, through qemu-img on the server."""
    x = xenapi.xenapi
    size = 8 * 2**20
    src = _vdi(x, size, os.urandom(2**20 + 3), at=3 * 2**20)
    back = _exported_by_qemu_img(server, x, src, tmp_path, "qcow2", "qcow2",
                                 "application/x-qemu-disk")
    assert back == open(_path(x, src), "rb").read()
    q = tmp_path / "d.qcow2"
    target = _vdi(x, size, b"old")
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(q),
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert r.stdout.endswith(b"200"), r.stdout
    assert open(_path(x, target), "rb").read() == open(_path(x, src), "rb").read()
    # an image whose backing file is a host file: refused, the VDI unchanged
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret" * 1000)
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(secret), "-F", "raw",
                    str(evil), str(size)], check=True, capture_output=True)
    before = open(_path(x, target), "rb").read()
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(evil),
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert not r.stdout.endswith(b"200") and b"backing file" in r.stdout, r.stdout
    assert open(_path(x, target), "rb").read() == before
    # an external data file (qcow2 v3 names it inside the image): refused, nothing read
    external = tmp_path / "external.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-o", f"data_file={secret}",
                    str(external), str(size)], check=True, capture_output=True)
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(external),
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert b"external data file" in r.stdout, r.stdout
    assert open(_path(x, target), "rb").read() == before
    # an image of a bigger disk than the VDI
    bigger = tmp_path / "bigger.qcow2"
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(bigger), str(2 * size)],
                   check=True, capture_output=True)
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(bigger),
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert b"does not fit" in r.stdout and open(_path(x, target), "rb").read() == before
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", "/etc/hostname",
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert b"not a qcow2 image" in r.stdout and open(_path(x, target), "rb").read() == before
    spool = os.path.join(os.path.dirname(server.socket_path), "spool")
    assert not os.path.isdir(spool) or os.listdir(spool) == []


def test_checkpoint_keeps_memory_and_revert_brings_it_back(server, xenapi):
    x = xenapi.xenapi
    vm = x.VM.create({"name_label": "cp", "memory_static_max": str(2**28)})
    x.VBD.create({"VM": vm, "VDI": _vdi(x, 2**20, b"disk"), "userdevice": "0", "mode": "RW",
                  "type": "Disk"})
    x.VM.start(vm, False, False)
    try:
        cp = x.VM.checkpoint(vm, "with memory")
        assert x.VM.get_power_state(vm) == "Running"               # it runs on
        rec = x.VM.get_record(cp)
        assert rec["is_a_snapshot"] and rec["power_state"] == "Suspended"
        assert x.VDI.get_type(rec["suspend_VDI"]) == "suspend"
        x.VM.hard_shutdown(vm)
        x.VM.revert(cp)
        assert x.VM.get_power_state(vm) == "Suspended"
        x.VM.resume(vm, False, False)                              # from the checkpoint's state
        assert x.VM.get_power_state(vm) == "Running"
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.checkpoint(cp, "of a snapshot")
        assert e.value.details[0] in ("VM_BAD_POWER_STATE", "OPERATION_NOT_ALLOWED")
    finally:
        x.VM.hard_shutdown(vm)


def test_a_failed_qcow2_export_leaves_no_spool_file(server, xenapi):
    x = xenapi.xenapi
    vdi = _vdi(x, 2**20, b"gone soon")
    os.unlink(_path(x, vdi))                      # the file vanished under the VDI
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}",
                        _url(server, f"/export_raw_vdi?vdi={vdi}&format=qcow2")],
                       capture_output=True)
    assert not r.stdout.endswith(b"200") and b"VDI_MISSING" in r.stdout, r.stdout
    spool = os.path.join(os.path.dirname(server.socket_path), "spool")
    assert not os.path.isdir(spool) or os.listdir(spool) == []


def test_disk_transfer_parameters_are_checked(server, xenapi):
    x = xenapi.xenapi
    vdi = _vdi(x, 2**20, b"data")
    before = open(_path(x, vdi), "rb").read()
    for method, path, why in (
            ("PUT", "/import_raw_vdi?format=vhd", b"existing VDI"),
            ("PUT", "/import_raw_vdi?format=qcow2", b"existing VDI"),
            ("PUT", f"/import_raw_vdi?vdi={vdi}&format=vmdk", b"INVALID_VALUE"),
            ("GET", f"/export_raw_vdi?vdi={vdi}&format=raw&base={vdi}", b"format=vhd"),
            ("GET", f"/export_raw_vdi?vdi={vdi}&format=vhd&base=00000000-0000-0000-0000-"
                    "000000000000", b"UUID_INVALID")):
        args = ["-T", "/etc/hostname"] if method == "PUT" else []
        r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args, _url(server, path)],
                           capture_output=True)
        assert int(r.stdout.rsplit(b"\n", 1)[1]) >= 400 and why in r.stdout, (path, r.stdout)
    assert open(_path(x, vdi), "rb").read() == before
    vm = x.VM.create({"name_label": "bios", "memory_static_max": str(2**28)})
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.set_bios_strings(vm, {"bios-vendor": "x" * 513})
    assert e.value.details[0] == "INVALID_VALUE" and x.VM.get_bios_strings(vm) == {}
    x.VM.destroy(vm)


def test_a_qcow2_upload_larger_than_any_image_of_the_vdi_is_cut_off(server, xenapi, tmp_path):
    """The spool takes at most the VDI's size plus tables and slack (64 MiB): an endless body
    is refused there, the spool emptied, the VDI unchanged."""
    x = xenapi.xenapi
    target = _vdi(x, 2**20, b"keep")
    before = open(_path(x, target), "rb").read()
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(70 * 2**20)
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "-T", str(big),
                        _url(server, f"/import_raw_vdi?vdi={target}&format=qcow2")],
                       capture_output=True)
    assert b"not over" in r.stdout, r.stdout[-300:]
    assert open(_path(x, target), "rb").read() == before
    spool = os.path.join(os.path.dirname(server.socket_path), "spool")
    assert not os.path.isdir(spool) or os.listdir(spool) == []


def test_a_delta_on_reflinked_snapshots_reads_only_what_changed(tmp_path):
    """On XFS (reflink=1) a snapshot shares its disk's blocks; 4 MiB written between two
    snapshots of a 64 MiB disk: the delta holds those 2 blocks, and the server reads them
    only to send them (4 MiB; the blocks the snapshots do not share are not compared), where
    reading both snapshots whole to compare them read 132 MiB
    (tests/httpd/reflink_scenario.py, its own mount namespace)."""
    r = run_scenario("tests.httpd.reflink_scenario", tmp_path)
    MiB = 2**20
    assert r["shared_first"] == 64 * MiB            # the snapshot is a reflink of the disk
    assert r["shared_snapshots"] == 60 * MiB        # all but what was written since
    assert r["data_ranges"] == [[10 * MiB, 2 * MiB], [12 * MiB, 2 * MiB]] and r["changed_ok"]
    assert r["server_read"] < 8 * MiB, r["server_read"]


def test_a_delta_between_copied_snapshots_compares_digests_not_data(fresh_server, tmp_path):
    """On ext4 (no reflinks) a snapshot is a copy, hashed per 2 MiB block when it is made
    (xva.digests): 4 MiB written between two snapshots of a 64 MiB disk, and the delta reads
    only those 2 blocks to send them, where comparing both snapshots read 132 MiB."""
    from tests.httpd.reflink_scenario import delta_scenario
    MiB = 2**20
    r = delta_scenario(fresh_server, tmp_path)
    assert r["shared_first"] == 0                   # a copy: nothing shared on the device
    assert r["data_ranges"] == [(10 * MiB, 2 * MiB), (12 * MiB, 2 * MiB)] and r["changed_ok"]
    assert r["server_read"] < 8 * MiB, r["server_read"]
