"""The messages and HTTP behaviours Xen Orchestra and Ansible rely on, through the SDK and curl
against the real server (issue 13)."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time

from tests.failures import fails


def test_servertime_and_software_version(xenapi):
    x = xenapi.xenapi
    host = x.host.get_all()[0]
    t = x.host.get_servertime(host)
    assert abs(time.mktime(time.strptime(t.value, "%Y%m%dT%H:%M:%SZ")) - time.mktime(
        time.gmtime())) < 60
    version = x.host.get_software_version(host)
    assert [int(n) for n in version["product_version"].split(".")] >= [8, 0, 0]
    assert version["xcp-httpd"]


def test_allowed_devices_and_memory_limits(xenapi):
    x = xenapi.xenapi
    vm = x.VM.create({"name_label": "surface", "memory_static_max": str(2**28)})
    try:
        assert x.VM.get_allowed_VBD_devices(vm) == [str(i) for i in range(16)]
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        vdi = x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "user",
                            "name_label": "d"})
        x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW", "type": "Disk"})
        x.VIF.create({"VM": vm, "network": x.network.get_all()[0], "device": "1"})
        assert "0" not in x.VM.get_allowed_VBD_devices(vm)
        assert x.VM.get_allowed_VIF_devices(vm) == ["0", "2", "3", "4", "5", "6"]
        m = str(2**27)
        x.VM.set_memory_limits(vm, m, str(2**28), m, str(2**28))
        assert x.VM.get_memory_dynamic_min(vm) == m and x.VM.get_memory_static_min(vm) == m
        fails("MEMORY_CONSTRAINT_VIOLATION", x.VM.set_memory_limits, vm, str(2**28), m, m, m)
        assert x.VM.get_memory_static_min(vm) == m          # unchanged by the refusal
    finally:
        for vbd in x.VM.get_VBDs(vm):
            x.VDI.destroy(x.VBD.get_VDI(vbd))
        x.VM.destroy(vm)


def test_task_progress_status_and_where_names(xenapi):
    x = xenapi.xenapi
    task = x.task.create("surface", "")
    x.task.set_progress(task, 0.5)
    assert x.task.get_progress(task) == 0.5
    x.task.set_status(task, "success")
    assert x.task.get_status(task) == "success"
    fails("INVALID_VALUE", x.task.set_status, task, "pending")    # ended tasks stay ended
    x.task.destroy(task)
    by_dunder = x.VM.get_all_records_where('field "name__label" = "demo"')
    assert by_dunder and by_dunder == x.VM.get_all_records_where('field "name_label" = "demo"')
    assert x.VLAN.get_all_records() == {}


def test_nbd_and_cbt_answer_as_on_a_file_sr(xenapi):
    x = xenapi.xenapi
    vdi = x.VDI.get_all()[0]
    assert x.VDI.get_nbd_info(vdi) == []
    sr = x.VDI.get_SR(vdi)
    for call in (x.VDI.enable_cbt, x.VDI.disable_cbt):
        assert fails("SR_OPERATION_NOT_SUPPORTED", call, vdi) == ["SR_OPERATION_NOT_SUPPORTED", sr]
    fails("SR_OPERATION_NOT_SUPPORTED", x.VDI.list_changed_blocks, vdi, vdi)
    fails("VDI_NO_CBT_METADATA", x.VDI.data_destroy, vdi)
    assert x.VDI.get_cbt_enabled(vdi) is False


def _raw_vdi(server, x, data: bytes) -> tuple[str, str]:
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(len(data)), "type": "user",
                        "name_label": "raw target"})
    pbd = x.SR.get_PBDs(sr)[0]
    path = os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")
    with open(path, "r+b") as fh:
        fh.write(data)
    return vdi, path


def test_upload_probe_and_a_cut_raw_upload_leave_the_vdi_as_it_was(server, xenapi):
    """Xen Orchestra's empty-body probe (no task_id, 0 or 1 PiB declared) is answered at once
    and never touches the VDI (it used to truncate it: data loss); a raw upload cut half way
    leaves the old content (the new one goes to a side file moved over at the end)."""
    x = xenapi.xenapi
    old = os.urandom(2**20)
    vdi, path = _raw_vdi(server, x, old)
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    for length in (0, 2**50):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(f"PUT /import_raw_vdi?vdi={vdi} HTTP/1.1\r\nHost: x\r\nAuthorization: "
                     f"Basic {auth}\r\nContent-Length: {length}\r\n\r\n".encode())
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.close()
        assert open(path, "rb").read() == old
    task = x.task.create("cut upload", "")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"PUT /import_raw_vdi?vdi={vdi}&task_id={task} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Basic {auth}\r\nContent-Length: {len(old)}\r\n\r\n".encode()
                 + bytes(300_000))
    time.sleep(0.5)
    sock.close()
    deadline = time.time() + 10
    while x.task.get_status(task) == "pending" and time.time() < deadline:
        time.sleep(0.1)
    assert x.task.get_status(task) == "failure"
    assert open(path, "rb").read() == old
    # the side file is gone by the time the task is failed (the work ends before the task)
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.endswith(".part")]
    x.VDI.destroy(vdi)


def test_http_task_ends_with_its_request(server, xenapi):
    x = xenapi.xenapi
    task = x.task.create("a stats poll", "")
    url = server.url.replace("http://", f"http://root:{server.password}@")
    subprocess.run(["curl", "-sf", "-o", "/dev/null",
                    f"{url}/rrd_updates?start=-60&host=true&task_id={task}"], check=True)
    assert x.task.get_status(task) == "success"
    other = x.task.create("a bad request", "")
    subprocess.run(["curl", "-s", "-o", "/dev/null", f"{url}/vm_rrd?uuid=x&task_id={other}"])
    assert x.task.get_status(other) == "failure"
    # without good credentials a request cannot end anybody's task
    third = x.task.create("not yours", "")
    subprocess.run(["curl", "-s", "-o", "/dev/null",
                    f"{server.url}/rrd_updates?start=-60&host=true&task_id={third}"])
    assert x.task.get_status(third) == "pending"


def test_cd_drive_insert_eject_from_an_iso_library(xenapi, tmp_path):
    x = xenapi.xenapi
    (tmp_path / "disc.iso").write_bytes(os.urandom(4096))
    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"path": str(tmp_path)}, "0", "ISOs", "", "iso", "iso", False, {})
    x.SR.scan(sr)
    disc = x.VDI.get_by_name_label("disc.iso")
    assert len(disc) == 1 and x.VDI.get_read_only(disc[0]) and x.VDI.get_SR(disc[0]) == sr
    vm = x.VM.create({"name_label": "cd", "memory_static_max": str(2**28)})
    cd = x.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3", "mode": "RO",
                       "type": "CD", "empty": True})
    assert "insert" in x.VBD.get_allowed_operations(cd)
    fails("VBD_IS_EMPTY", x.VBD.eject, cd)
    x.VBD.insert(cd, disc[0])
    assert x.VBD.get_VDI(cd) == disc[0] and not x.VBD.get_empty(cd)
    assert "eject" in x.VBD.get_allowed_operations(cd)
    fails("VBD_NOT_EMPTY", x.VBD.insert, cd, disc[0])
    x.VBD.eject(cd)
    assert x.VBD.get_empty(cd) and x.VBD.get_VDI(cd) == "OpaqueRef:NULL"
    disk = x.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "4", "mode": "RO",
                         "type": "Floppy", "empty": True})
    fails("VBD_NOT_REMOVABLE_MEDIA", x.VBD.insert, disk, disc[0])
    x.VM.destroy(vm)
    x.SR.forget(sr)


def test_a_new_domid_at_every_boot_and_reboot(xenapi):
    x = xenapi.xenapi
    vm = x.VM.create({"name_label": "domids", "memory_static_max": str(2**28)})
    try:
        x.VM.start(vm, False, False)
        first = int(x.VM.get_domid(vm))
        x.VM.hard_reboot(vm)
        second = int(x.VM.get_domid(vm))
        x.VM.clean_reboot(vm)
        third = int(x.VM.get_domid(vm))
        assert 0 < first < second < third
        x.VM.hard_shutdown(vm)
        assert x.VM.get_domid(vm) == "-1"
    finally:
        x.VM.destroy(vm)


def test_what_xen_orchestras_host_and_vm_code_calls(xenapi):
    x = xenapi.xenapi
    host = x.host.get_all()[0]
    vm = x.VM.create({"name_label": "xo calls", "memory_static_max": str(2**28)})
    try:
        x.VM.assert_operation_valid(vm, "start")
        assert fails("VM_BAD_POWER_STATE", x.VM.assert_operation_valid, vm, "suspend")
        x.VM.set_bios_strings(vm, {"bios-vendor": "xcp-httpd"})
        assert x.VM.get_bios_strings(vm) == {"bios-vendor": "xcp-httpd"}
        fails("VM_BIOS_STRINGS_ALREADY_SET", x.VM.set_bios_strings, vm, {"bios-vendor": "x"})
        x.host.disable(host)
        assert x.host.get_enabled(host) is False
        fails("HOST_DISABLED", x.VM.start, vm, False, False)
        x.host.enable(host)
        x.VM.start(vm, False, False)
        x.VM.suspend(vm)
        x.host.disable(host)
        fails("HOST_DISABLED", x.VM.resume, vm, False, False)       # a new domain too
        assert x.VM.get_power_state(vm) == "Suspended"
        x.host.enable(host)
        x.VM.resume(vm, False, False)
        x.VM.hard_shutdown(vm)
        assert fails("XENAPI_MISSING_PLUGIN", x.host.call_plugin, host, "raid.py",
                      "check_raid_pool", {}) == ["XENAPI_MISSING_PLUGIN", "raid.py"]
        fails("HA_NOT_ENABLED", x.pool.disable_ha)
    finally:
        x.host.enable(host)
        x.VM.destroy(vm)


def test_task_progress_refuses_what_is_not_a_number(server, xenapi):
    """Python's JSON parser takes NaN and Infinity: they must not reach a task (its events would
    carry a value no XML-RPC client can read)."""
    import json
    import urllib.request
    x = xenapi.xenapi
    task = x.task.create("nan", "")
    for bad in ("NaN", "Infinity"):
        body = ('{"jsonrpc": "2.0", "id": 1, "method": "task.set_progress", "params": ["%s", '
                '"%s", %s]}' % (xenapi._session, task, bad)).encode()
        req = urllib.request.Request(server.url + "/jsonrpc", data=body,
                                     headers={"Content-Type": "application/json"})
        reply = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert reply["error"]["message"] in ("INVALID_VALUE", "FIELD_TYPE_ERROR"), reply
    assert x.task.get_progress(task) == 0.0
    x.task.destroy(task)


def test_pif_metrics_say_what_the_kernel_says(xenapi):
    """The SDK's renameif example reads PIF_metrics.carrier; xapi keeps one record per PIF."""
    x = xenapi.xenapi
    for pif, rec in x.PIF.get_all_records().items():
        m = x.PIF_metrics.get_record(rec["metrics"])
        try:
            carrier = open(f"/sys/class/net/{rec['device']}/carrier").read().strip() == "1"
        except OSError:                           # EINVAL: the link is administratively down
            carrier = False
        assert m["carrier"] is carrier and int(m["speed"]) >= 0
