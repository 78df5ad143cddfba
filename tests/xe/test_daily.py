"""The xe commands a single-host administrator types every day, against the real server:
tasks, pause, snapshots, a VM's disks and NICs, CD drives, SR scan, VDI resize/copy/clone,
VDI export/import, VBD plug/unplug, and errors in words."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from .conftest import XE


@pytest.fixture
def vm(xe):
    """A halted VM with a 4 MiB disk and a NIC, its uuid."""
    u = xe.out("vm-install", "template=Debian Etch 4.0", f"new-name-label=daily-{time.time_ns()}")
    net = xe.out("network-list", "params=uuid", "--minimal").split(",")[0]
    xe("vif-create", f"vm-uuid={u}", f"network-uuid={net}", "device=0")
    yield u
    xe("vm-uninstall", f"uuid={u}", "--force", check=False)


def test_pause_and_unpause(xe, vm):
    xe("vm-start", f"uuid={vm}")
    xe("vm-pause", f"uuid={vm}")
    assert xe.out("vm-param-get", f"uuid={vm}", "param-name=power-state") == "paused"
    xe("vm-unpause", f"uuid={vm}")
    assert xe.out("vm-param-get", f"uuid={vm}", "param-name=power-state") == "running"
    xe("vm-shutdown", f"uuid={vm}", "--force")


def _small_disk(xe, vm: str, size: int = 4 * 2**20) -> str:
    """A second disk of the VM (device 1), `size` bytes: the template's is 4 GiB."""
    return xe.out("vm-disk-add", f"uuid={vm}", f"disk-size={size}", "device=1")


def test_snapshot_list_revert_destroy_uninstall(xe, vm, tmp_path):
    vdi = _small_disk(xe, vm)
    size = 4 * 2**20
    before, after = tmp_path / "before.raw", tmp_path / "after.raw"
    before.write_bytes(os.urandom(2**20) + bytes(size - 2**20))
    after.write_bytes(os.urandom(2**20) + bytes(size - 2**20))
    xe("vdi-import", f"uuid={vdi}", f"filename={before}")
    snap = xe.out("vm-snapshot", f"uuid={vm}", "new-name-label=before")
    assert xe.out("snapshot-list", f"snapshot-of={vm}", "params=uuid", "--minimal") == snap
    assert snap not in xe.out("template-list", "params=uuid", "--minimal")
    assert snap not in xe.out("vm-list", "params=uuid", "--minimal")
    assert xe.out("snapshot-param-get", f"uuid={snap}", "param-name=name-label") == "before"
    xe("vdi-import", f"uuid={vdi}", f"filename={after}")
    xe("snapshot-revert", f"snapshot-uuid={snap}")
    vdi = xe.out("vbd-list", f"vm-uuid={vm}", "userdevice=1", "params=vdi-uuid", "--minimal")
    back = tmp_path / "back.raw"
    xe("vdi-export", f"uuid={vdi}", f"filename={back}")
    assert back.read_bytes() == before.read_bytes()
    r = xe("snapshot-revert", f"snapshot-uuid={vm}", check=False)
    assert r.returncode != 0 and "is not a snapshot" in r.stderr
    disks = xe.out("vbd-list", f"vm-uuid={snap}", "userdevice=1", "params=vdi-uuid",
                   "--minimal")
    xe("snapshot-destroy", f"uuid={snap}")
    assert xe.out("snapshot-list", f"snapshot-of={vm}", "--minimal") == ""
    assert xe.out("vdi-list", f"uuid={disks}", "--minimal") == disks     # its disk stays
    again = xe.out("vm-snapshot", f"uuid={vm}", "new-name-label=again")
    disks = xe.out("vbd-list", f"vm-uuid={again}", "type=Disk", "params=vdi-uuid", "--minimal")
    assert disks.count(",") == 1                          # the template's disk and ours
    xe("snapshot-uninstall", f"snapshot-uuid={again}", "--force")
    for d in disks.split(","):
        assert xe.out("vdi-list", f"uuid={d}", "--minimal") == ""        # and these go


def test_disk_and_vif_lists(xe, vm):
    text = xe.out("vm-disk-list", f"uuid={vm}")
    assert "Disk 0 VBD:" in text and "Disk 0 VDI:" in text
    assert "sr-name-label ( RO): Local storage" in text
    assert "virtual-size ( RO): " in text
    vdi_only = xe.out("vm-disk-list", f"uuid={vm}", "--vdi-only", "vdi-params=uuid")
    assert vdi_only.startswith("Disk 0 VDI:\nuuid ( RO)") and "VBD" not in vdi_only
    vifs = xe.out("vm-vif-list", f"uuid={vm}")
    assert "device ( RO): 0" in vifs and "MAC ( RO): " in vifs
    assert "network-name-label ( RO): " in vifs


def test_vbd_plug_unplug_and_errors_in_words(xe, vm):
    xe("vm-start", f"uuid={vm}")
    vdi = xe.out("vm-disk-add", f"uuid={vm}", "disk-size=1MiB", "device=4")
    vbd = xe.out("vbd-list", f"vdi-uuid={vdi}", "params=uuid", "--minimal")
    assert xe.out("vbd-param-get", f"uuid={vbd}", "param-name=currently-attached") == "true"
    xe("vbd-unplug", f"uuid={vbd}")
    assert xe.out("vbd-param-get", f"uuid={vbd}", "param-name=currently-attached") == "false"
    r = xe("vbd-unplug", f"uuid={vbd}", check=False)
    assert r.returncode != 0 and "The device is not plugged in." in r.stderr
    xe("vbd-plug", f"uuid={vbd}")
    assert xe.out("vbd-param-get", f"uuid={vbd}", "param-name=currently-attached") == "true"
    r = xe("vbd-create", f"vm-uuid={vm}", f"vdi-uuid={vdi}", "device=4", check=False)
    assert r.returncode != 0
    assert "already has a device in that slot" in r.stderr and "Error code:" not in r.stderr
    xe("vm-shutdown", f"uuid={vm}", "--force")


def test_cd_insert_eject(xe, xenapi, vm, tmp_path):
    iso_dir = tmp_path / "isos"
    iso_dir.mkdir()
    x = xenapi.xenapi
    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"path": str(iso_dir)}, "0", "daily ISOs", "", "iso", "iso", False,
                     {})
    try:
        (iso_dir / "tools.iso").write_bytes(b"\0" * 4096)
        xe("sr-scan", f"uuid={x.SR.get_uuid(sr)}")       # the new file becomes a VDI
        assert xe.out("vdi-list", "name-label=tools.iso", "params=uuid", "--minimal")
        r = xe("vm-cd-insert", f"uuid={vm}", "cd-name=tools.iso", check=False)
        assert r.returncode != 0 and "has no CD drive" in r.stderr
        xe("vbd-create", f"vm-uuid={vm}", "device=3", "type=CD", "mode=RO")
        xe("vm-cd-insert", f"uuid={vm}", "cd-name=tools.iso")
        assert "name-label ( RW): tools.iso" in xe.out("vm-cd-list", f"uuid={vm}")
        r = xe("vm-cd-insert", f"uuid={vm}", "cd-name=tools.iso", check=False)
        assert "already holds a disc" in r.stderr
        xe("vm-cd-eject", f"uuid={vm}")
        assert "empty ( RO): true" in xe.out("vm-cd-list", f"uuid={vm}")
        xe("vm-cd-add", f"uuid={vm}", "cd-name=tools.iso", "device=4")
        assert "CD 4 VDI:" in xe.out("vm-cd-list", f"uuid={vm}")
        xe("vm-cd-remove", f"uuid={vm}", "cd-name=tools.iso")
        assert "CD 4" not in xe.out("vm-cd-list", f"uuid={vm}")
        drive = xe.out("vbd-list", f"vm-uuid={vm}", "type=CD", "params=uuid", "--minimal")
        iso = xe.out("vdi-list", "name-label=tools.iso", "params=uuid", "--minimal")
        xe("vbd-insert", f"uuid={drive}", f"vdi-uuid={iso}")
        assert xe.out("vbd-param-get", f"uuid={drive}", "param-name=vdi-uuid") == iso
        xe("vbd-eject", f"uuid={drive}")
        assert xe.out("vbd-param-get", f"uuid={drive}", "param-name=empty") == "true"
    finally:
        for vbd in x.VM.get_VBDs(xe_vm := x.VM.get_by_uuid(vm)):
            if x.VBD.get_type(vbd) == "CD":
                x.VBD.destroy(vbd)
        assert xe_vm
        x.SR.forget(sr)


def test_vdi_resize_copy_clone(xe, vm):
    vdi = _small_disk(xe, vm)
    size = 4 * 2**20
    xe("vdi-resize", f"uuid={vdi}", f"disk-size={size + 2**20}")
    assert int(xe.out("vdi-param-get", f"uuid={vdi}", "param-name=virtual-size")) == size + 2**20
    copy = xe.out("vdi-copy", f"uuid={vdi}")
    clone = xe.out("vdi-clone", f"uuid={vdi}", "new-name-label=the clone")
    assert xe.out("vdi-param-get", f"uuid={clone}", "param-name=name-label") == "the clone"
    snap = xe.out("vdi-snapshot", f"uuid={vdi}")
    assert xe.out("vdi-param-get", f"uuid={snap}", "param-name=is-a-snapshot") == "true"
    assert xe.out("vdi-param-get", f"uuid={snap}", "param-name=snapshot-of") == vdi
    for u in (copy, clone, snap):
        assert int(xe.out("vdi-param-get", f"uuid={u}", "param-name=virtual-size")) \
            == size + 2**20
        xe("vdi-destroy", f"uuid={u}")


@pytest.mark.parametrize("fmt", ["raw", "vhd"])
def test_vdi_export_import(xe, tmp_path, fmt):
    sr = xe.out("sr-list", "name-label=Local storage", "params=uuid", "--minimal")
    src = xe.out("vdi-create", f"sr-uuid={sr}", "name-label=src", "virtual-size=4MiB")
    dst = xe.out("vdi-create", f"sr-uuid={sr}", "name-label=dst", "virtual-size=4MiB")
    data = os.urandom(2**20)
    raw = tmp_path / "data.raw"
    raw.write_bytes(data + bytes(3 * 2**20))
    xe("vdi-import", f"uuid={src}", f"filename={raw}", "format=raw")
    out = tmp_path / f"disk.{fmt}"
    xe("vdi-export", f"uuid={src}", f"filename={out}", f"format={fmt}")
    if fmt == "vhd":
        info = subprocess.run(["qemu-img", "info", "-f", "vpc", str(out)], capture_output=True,
                              text=True, check=True).stdout
        assert "virtual size: 4 MiB" in info
        assert out.stat().st_size < 3 * 2**20        # only the allocated blocks
    else:
        assert out.read_bytes() == raw.read_bytes()
    xe("vdi-import", f"uuid={dst}", f"filename={out}", f"format={fmt}")
    back = tmp_path / "back.raw"
    xe("vdi-export", f"uuid={dst}", f"filename={back}")
    assert back.read_bytes() == raw.read_bytes()
    r = xe("vdi-export", f"uuid={src}", f"filename={tmp_path}/x", "format=qcow9", check=False)
    assert r.returncode != 0 and "format= takes raw or vhd" in r.stderr
    for u in (src, dst):
        xe("vdi-destroy", f"uuid={u}")


def test_task_list_and_cancel(xe, xenapi):
    x = xenapi.xenapi
    task = x.task.create("a long job", "for task-cancel")
    uuid = x.task.get_uuid(task)
    assert uuid in xe.out("task-list", "status=pending", "params=uuid", "--minimal")
    xe("task-cancel", f"uuid={uuid}")
    assert x.task.get_status(task) in ("cancelling", "cancelled")
    x.task.destroy(task)


def test_export_cancelled_with_task_cancel(xe, xenapi, vm, tmp_path):
    """The README's way to stop a transfer from elsewhere: task-list finds it, task-cancel
    ends it, and the exporting xe exits non-zero with no file left."""
    vdi = _small_disk(xe, vm, 64 * 2**20)
    data = tmp_path / "dense.raw"
    data.write_bytes(os.urandom(64 * 2**20))          # dense: the export takes a while
    xe("vdi-import", f"uuid={vdi}", f"filename={data}")
    target = tmp_path / "slow.xva"
    proc = subprocess.Popen(
        ["bash", "-c", f"set -o pipefail; {' '.join(XE)} vm-export uuid={vm} filename=- | "
                       f"(sleep 3; cat > {target})"],
        env=xe.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        tasks = ""
        while not tasks and time.monotonic() < deadline:
            tasks = xe.out("task-list", "name-label=Export of VM: " + vm, "status=pending",
                           "params=uuid", "--minimal")
            time.sleep(0.1)
        assert tasks, "the export's task never showed in task-list"
        xe("task-cancel", f"uuid={tasks.split(',')[0]}")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode != 0
        assert "cancel" in err.lower(), err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_checkpoint_memory_and_disk_remove(xe, vm):
    xe("vm-memory-set", f"uuid={vm}", "memory=512MiB")
    assert xe.out("vm-param-get", f"uuid={vm}", "param-name=memory-static-max") == str(2**29)
    assert xe.out("vm-param-get", f"uuid={vm}", "param-name=memory-dynamic-min") == str(2**29)
    xe("vm-memory-limits-set", f"uuid={vm}", "static-min=64MiB", "static-max=512MiB",
       "dynamic-min=256MiB", "dynamic-max=512MiB")
    assert xe.out("vm-param-get", f"uuid={vm}", "param-name=memory-dynamic-min") == str(2**28)
    r = xe("vm-memory-limits-set", f"uuid={vm}", "static-min=1GiB", "static-max=512MiB",
           "dynamic-min=256MiB", "dynamic-max=512MiB", check=False)
    assert r.returncode != 0 and "static_min <= dynamic_min" in r.stderr
    vdi = _small_disk(xe, vm)
    xe("vm-disk-remove", f"uuid={vm}", "device=1")
    assert xe.out("vdi-list", f"uuid={vdi}", "--minimal") == ""
    assert "Disk 1" not in xe.out("vm-disk-list", f"uuid={vm}")
    r = xe("vm-disk-remove", f"uuid={vm}", "device=1", check=False)
    assert r.returncode != 0 and "has no disk at device 1" in r.stderr
    xe("vm-start", f"uuid={vm}")
    cp = xe.out("vm-checkpoint", f"uuid={vm}", "new-name-label=live")
    assert xe.out("snapshot-param-get", f"uuid={cp}", "param-name=power-state") == "suspended"
    xe("snapshot-uninstall", f"uuid={cp}", "--force")
    xe("vm-shutdown", f"uuid={vm}", "--force")


def test_network_create_and_host_disable(xe, vm):
    net = xe.out("network-create", "name-label=backend", "MTU=9000")
    assert xe.out("network-param-get", f"uuid={net}", "param-name=MTU") == "9000"
    xe("network-destroy", f"uuid={net}")
    xe("host-disable")
    try:
        r = xe("vm-start", f"uuid={vm}", check=False)
        assert r.returncode != 0 and "The host is disabled" in r.stderr, r.stderr
    finally:
        xe("host-enable")
    xe("vm-start", f"uuid={vm}")
    xe("vm-shutdown", f"uuid={vm}", "--force")
