"""The guide's chapter-3 walk-throughs with the official SDK (issue 3 acceptance)."""

from __future__ import annotations

import os
import time

import pytest
import XenAPI


def _template(x, name="Debian Etch 4.0"):
    return next(r for r, v in x.VM.get_all_records().items() if v["name_label"] == name)


class EventLog:
    """Follows event.from from a token taken now; `seen` lists (class, op, field values)."""

    def __init__(self, x, classes):
        self.x, self.classes = x, classes
        self.token = x.event_from(classes, "", 0.0)["token"]

    def drain(self, timeout=2.0):
        out = []
        while True:
            ev = self.x.event_from(self.classes, self.token, timeout)
            self.token = ev["token"]
            if not ev["events"]:
                return out
            out += ev["events"]
            timeout = 0.2


def test_install_and_start_walkthrough(server):
    """Login, get_all_records, find the template, clone, provision, start, suspend, resume,
    shutdown, logout; every step visible in event.from."""
    session = server.session()
    x = session.xenapi
    log = EventLog(x, ["vm"])
    records = x.VM.get_all_records()
    t_ref = next(r for r, v in records.items()
                 if v["is_a_template"] and v["name_label"] == "Debian Etch 4.0")
    new_vm_ref = x.VM.clone(t_ref, "my first VM")
    assert x.VM.get_is_a_template(new_vm_ref)
    x.VM.provision(new_vm_ref)
    assert not x.VM.get_is_a_template(new_vm_ref)
    states = []
    for step, expected in ((lambda: x.VM.start(new_vm_ref, False, False), "Running"),
                           (lambda: x.VM.suspend(new_vm_ref), "Suspended"),
                           (lambda: x.VM.resume(new_vm_ref, False, False), "Running"),
                           (lambda: x.VM.clean_shutdown(new_vm_ref), "Halted")):
        step()
        assert x.VM.get_power_state(new_vm_ref) == expected
        events = [e for e in log.drain() if e["ref"] == new_vm_ref]
        assert events, f"no event for {expected}"
        states.append(events[-1]["snapshot"]["power_state"])
    assert states == ["Running", "Suspended", "Running", "Halted"]
    session.xenapi.session.logout()


def test_provisioned_disk_is_sparse_and_holds_a_root_filesystem(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "rootfs")
    x.VM.provision(vm)
    (vbd,) = x.VM.get_VBDs(vm)
    vdi = x.VDI.get_record(x.VBD.get_VDI(vbd))
    assert int(vdi["virtual_size"]) == 4 * 2**30
    assert 0 < int(vdi["physical_utilisation"]) < 2 * 2**20     # sparse: a rootfs, not 4 GiB
    assert x.VBD.get_bootable(vbd) and x.VBD.get_userdevice(vbd) == "0"


def test_running_vm_has_rfb_console_location(server, xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "console")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    try:
        consoles = [x.console.get_record(c) for c in x.VM.get_consoles(vm)]
        rfb = [c for c in consoles if c["protocol"] == "rfb"]
        assert len(rfb) == 1
        assert rfb[0]["location"].endswith(f"/console?uuid={rfb[0]['uuid']}")
        assert rfb[0]["location"].startswith("http://") and str(server.port) in rfb[0]["location"]
        assert int(x.VM.get_domid(vm)) > 0
        assert x.VM.get_resident_on(vm) == x.pool.get_master(x.pool.get_all()[0])
        assert x.VM_metrics.get_VCPUs_number(x.VM.get_metrics(vm)) == "1"
    finally:
        x.VM.hard_shutdown(vm)
    assert x.VM.get_consoles(vm) == [] and x.VM.get_domid(vm) == "-1"


def test_disk_and_nic_hotplug_walkthrough(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "hotplug")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    try:
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        vdi = x.VDI.create({"name_label": "blank", "name_description": "", "SR": sr,
                            "virtual_size": str(64 * 2**20), "type": "user", "sharable": False,
                            "read_only": False, "other_config": {}})
        vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "autodetect", "mode": "RW",
                            "type": "Disk", "bootable": False, "empty": False,
                            "other_config": {}, "qos_algorithm_type": "",
                            "qos_algorithm_params": {}})
        assert x.VBD.get_userdevice(vbd) == "1"
        assert not x.VBD.get_currently_attached(vbd)
        x.VBD.plug(vbd)
        assert x.VBD.get_currently_attached(vbd) and x.VBD.get_device(vbd) == "xvdb"
        with pytest.raises(XenAPI.Failure) as e:
            x.VDI.destroy(vdi)
        assert e.value.details == ["VDI_IN_USE", vdi, "destroy"]
        x.VBD.unplug(vbd)
        assert not x.VBD.get_currently_attached(vbd)
        x.VBD.destroy(vbd)
        x.VDI.destroy(vdi)

        net = x.network.get_all()[0]
        vif = x.VIF.create({"device": "", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                            "other_config": {}, "qos_algorithm_type": "",
                            "qos_algorithm_params": {}})
        mac = x.VIF.get_MAC(vif)
        assert len(mac) == 17 and int(mac[:2], 16) & 2       # locally administered
        assert not x.VIF.get_currently_attached(vif)
        x.VIF.plug(vif)
        assert x.VIF.get_currently_attached(vif)
        assert vif in x.network.get_VIFs(net)
        x.VIF.unplug(vif)
        x.VIF.destroy(vif)
    finally:
        x.VM.hard_shutdown(vm)


def test_permute_style_async_loop(xenapi):
    """Several Async calls in flight, each awaited through its task record."""
    x = xenapi.xenapi
    t = _template(x)
    clones = [x.VM.clone(t, f"perm-{i}") for i in range(3)]
    for vm in clones:
        x.VM.provision(vm)

    def wait(tasks):
        deadline = time.time() + 30
        while time.time() < deadline:
            recs = [x.task.get_record(tk) for tk in tasks]
            if all(r["status"] != "pending" for r in recs):
                for tk, r in zip(tasks, recs):
                    assert r["status"] == "success", r["error_info"]
                    x.task.destroy(tk)
                return
            time.sleep(0.05)
        raise AssertionError("tasks did not finish")

    for op, args, state in (("start", (False, False), "Running"), ("suspend", (), "Suspended"),
                            ("resume", (False, False), "Running"),
                            ("clean_shutdown", (), "Halted")):
        wait([getattr(x.Async.VM, op)(vm, *args) for vm in clones])
        assert {x.VM.get_power_state(vm) for vm in clones} == {state}


def test_async_clone_reports_a_result(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "async-source")
    x.VM.provision(vm)
    task = x.Async.VM.clone(vm, "async-copy")
    token, status = "", "pending"
    while status == "pending":
        ev = x.event_from([f"task/{task}"], token, 30.0)
        token = ev["token"]
        status = next((e["snapshot"]["status"] for e in ev["events"] if "snapshot" in e), status)
    assert status == "success", x.task.get_error_info(task)
    new = x.task.get_result(task)[len("<value>"):-len("</value>")]
    assert x.VM.get_name_label(new) == "async-copy" and len(x.VM.get_VBDs(new)) == 1


def test_lifecycle_errors_leave_nothing(xenapi):
    x = xenapi.xenapi
    t = _template(x)
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.start(t, False, False)
    assert e.value.details == ["VM_IS_TEMPLATE", t, "start"]
    vm = x.VM.clone(t, "errors")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    try:
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.start(vm, False, False)
        assert e.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
        vms_before = set(x.VM.get_all())
        vdis_before = set(x.VDI.get_all())
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.clone(vm, "clone of a running VM")
        assert e.value.details == ["VM_BAD_POWER_STATE", vm, "halted", "running"]
        assert set(x.VM.get_all()) == vms_before and set(x.VDI.get_all()) == vdis_before
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.resume(vm, False, False)
        assert e.value.details[0] == "VM_BAD_POWER_STATE"
    finally:
        x.VM.hard_shutdown(vm)
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    files_before = sorted(os.listdir(_sr_path(x, sr)))
    with pytest.raises(XenAPI.Failure) as e:
        x.VDI.create({"SR": sr, "virtual_size": str(2**60), "type": "user",
                      "name_label": "too big"})
    assert e.value.details[0] == "SR_FULL" and e.value.details[1] == str(2**60)
    assert sorted(os.listdir(_sr_path(x, sr))) == files_before
    assert set(x.VDI.get_all()) == vdis_before
    x.VM.destroy(vm)
    assert vm not in x.VM.get_all()


def _sr_path(x, sr):
    pbd = x.SR.get_PBDs(sr)[0]
    return x.PBD.get_device_config(pbd)["path"]


def test_clone_copies_data_sparsely(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "source")
    x.VM.provision(vm)
    copy = x.VM.copy(vm, "copied", "OpaqueRef:NULL")
    src = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    dst = x.VBD.get_VDI(x.VM.get_VBDs(copy)[0])
    assert src != dst
    sr_dir = _sr_path(x, x.VDI.get_SR(src))
    a = os.path.join(sr_dir, x.VDI.get_location(src) + ".raw")
    b = os.path.join(sr_dir, x.VDI.get_location(dst) + ".raw")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(2**20)
        fb.seek(2**20)
        assert fa.read(2**20) == fb.read(2**20)
    assert os.stat(b).st_blocks * 512 < 4 * 2**20
    assert os.stat(b).st_size == os.stat(a).st_size
    x.VM.destroy(copy)


def test_sr_scan_notices_files_added_and_removed(xenapi):
    x = xenapi.xenapi
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    path = _sr_path(x, sr)
    added = os.path.join(path, "handmade.raw")
    with open(added, "wb") as fh:
        fh.truncate(3 * 2**20)
    x.SR.scan(sr)
    found = [v for v in x.SR.get_VDIs(sr) if x.VDI.get_location(v) == "handmade"]
    assert len(found) == 1 and x.VDI.get_virtual_size(found[0]) == str(3 * 2**20)
    os.unlink(added)
    x.SR.scan(sr)
    assert found[0] not in x.SR.get_VDIs(sr)
    assert int(x.SR.get_physical_size(sr)) > 0 and int(x.SR.get_physical_utilisation(sr)) > 0


def test_vdi_resize_and_clone(xenapi):
    x = xenapi.xenapi
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "user", "name_label": "r"})
    x.VDI.resize(vdi, str(2**21))
    assert x.VDI.get_virtual_size(vdi) == str(2**21)
    with pytest.raises(XenAPI.Failure):
        x.VDI.resize(vdi, str(2**10))
    clone = x.VDI.clone(vdi, {})
    assert x.VDI.get_virtual_size(clone) == str(2**21)
    x.VDI.destroy(clone)
    x.VDI.destroy(vdi)


def test_running_vm_survives_restart(fresh_server):
    x = fresh_server.session().xenapi
    vm = x.VM.clone(_template(x), "survivor")
    x.VM.provision(vm)
    x.VM.start(vm, False, False)
    halted_later = x.VM.clone(_template(x), "not resumable")
    x.VM.provision(halted_later)
    x.VM.start(halted_later, False, False)
    uuid = x.VM.get_uuid(halted_later)
    fresh_server.stop()
    # A saved state that cannot be used: the VM must come back Halted, not lying.
    with open(fresh_server.data_dir / "domains" / f"{uuid}.state", "wb") as fh:
        fh.write(b"garbage")
    fresh_server.start()
    x = fresh_server.session().xenapi
    assert x.VM.get_power_state(vm) == "Running"
    assert [x.console.get_protocol(c) for c in x.VM.get_consoles(vm)].count("rfb") == 1
    assert x.VM.get_power_state(halted_later) == "Halted"
    assert x.VM.get_consoles(halted_later) == []
    assert not any(x.VBD.get_currently_attached(b) for b in x.VM.get_VBDs(halted_later))
    x.VM.clean_shutdown(vm)


def test_second_sr_with_pbd_plug_unplug(xenapi, tmp_path):
    x = xenapi.xenapi
    host = x.pool.get_master(x.pool.get_all()[0])
    path = str(tmp_path / "sr2")
    sr = x.SR.create(host, {"path": path}, "0", "Second SR", "", "file", "user", False, {})
    (pbd,) = x.SR.get_PBDs(sr)
    assert x.PBD.get_currently_attached(pbd) and x.PBD.get_device_config(pbd) == {"path": path}
    assert int(x.SR.get_physical_size(sr)) > 0
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "user",
                        "name_label": "on sr2"})
    assert os.path.exists(os.path.join(path, x.VDI.get_location(vdi) + ".raw"))
    assert x.SR.get_virtual_allocation(sr) == str(2**20)
    x.PBD.unplug(pbd)
    with pytest.raises(XenAPI.Failure) as e:
        x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "user"})
    assert e.value.details == ["SR_NOT_ATTACHED", sr]
    x.PBD.plug(pbd)
    x.VDI.destroy(vdi)
    assert os.listdir(path) == []
    with pytest.raises(XenAPI.Failure) as e:
        x.SR.create(host, {"path": "relative/dir"}, "0", "bad", "", "file", "user", False, {})
    assert e.value.details[0] == "INVALID_VALUE"
    bad_pbd = x.PBD.create({"host": host, "SR": sr, "device_config": {"path": "/nonexistent/x"}})
    with pytest.raises(XenAPI.Failure) as e:
        x.PBD.plug(bad_pbd)
    assert e.value.details[0] == "SR_BACKEND_FAILURE"
    assert not x.PBD.get_currently_attached(bad_pbd)
    x.PBD.destroy(bad_pbd)
    x.SR.forget(sr)
    assert sr not in x.SR.get_all()


def test_pause_unpause_reboot_and_operation_lock(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "pauser")
    x.VM.provision(vm)
    x.VM.start(vm, True, False)                      # start_paused
    try:
        assert x.VM.get_power_state(vm) == "Paused"
        assert "unpause" in x.VM.get_allowed_operations(vm)
        x.VM.unpause(vm)
        assert x.VM.get_power_state(vm) == "Running"
        x.VM.pause(vm)
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.suspend(vm)
        assert e.value.details == ["VM_BAD_POWER_STATE", vm, "running", "paused"]
        x.VM.unpause(vm)
        domid = x.VM.get_domid(vm)
        x.VM.clean_reboot(vm)
        x.VM.hard_reboot(vm)
        # a reboot makes a new domain, so a new domid, as xapi (Ansible's modules rely on it)
        assert x.VM.get_power_state(vm) == "Running" and int(x.VM.get_domid(vm)) > int(domid)
        # two operations at once: the second meets the first's lock
        t1 = x.Async.VM.suspend(vm)
        t2 = x.Async.VM.clean_shutdown(vm)
        for t in (t1, t2):
            while x.task.get_status(t) == "pending":
                time.sleep(0.02)
        statuses = sorted((x.task.get_status(t), x.task.get_error_info(t)[:1]) for t in (t1, t2))
        assert statuses[0] == ("failure", ["OTHER_OPERATION_IN_PROGRESS"])
        assert statuses[1] == ("success", [])
        assert x.VM.get_current_operations(vm) == {}
    finally:
        if x.VM.get_power_state(vm) != "Halted":
            x.VM.hard_shutdown(vm)


def test_metrics_and_allowed_operations_follow_every_power_state(xenapi):
    """One power table: VM_metrics.state and allowed_operations agree with the power state on
    every path (VM.pause used to leave VM_metrics.state at [] while start_paused said paused)."""
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "metrics follow")
    x.VM.provision(vm)
    metrics = x.VM.get_metrics(vm)
    try:
        x.VM.start(vm, False, False)
        assert x.VM_metrics.get_state(metrics) == []
        x.VM.pause(vm)
        assert x.VM_metrics.get_state(metrics) == ["paused"]
        assert "unpause" in x.VM.get_allowed_operations(vm)
        assert "pause" not in x.VM.get_allowed_operations(vm)
        x.VM.unpause(vm)
        assert x.VM_metrics.get_state(metrics) == []
        x.VM.suspend(vm)
        assert x.VM_metrics.get_state(metrics) == []
        assert set(x.VM.get_allowed_operations(vm)) >= {"resume", "hard_shutdown", "destroy"}
        assert "start" not in x.VM.get_allowed_operations(vm)
        x.VM.resume(vm, True, False)
        assert x.VM_metrics.get_state(metrics) == ["paused"]
    finally:
        x.VM.hard_shutdown(vm)
    assert x.VM_metrics.get_state(metrics) == []
    assert "start" in x.VM.get_allowed_operations(vm)
    x.VM.destroy(vm)


async def test_a_failed_checkpoint_leaves_no_half_snapshot(tmp_path, monkeypatch):
    """The state write fails after the disks were snapshotted: the snapshot, its disks and the
    suspend image all go, the VM runs on (in process: the domain's save is made to fail)."""
    from httpd.backends.simulated import SimulatedDomain
    from httpd.core.calls import call_internal
    from httpd.web.appkeys import SERVICES
    from tests.in_process import running_agent

    async def failing_save(self, path):
        raise OSError("disk full while saving the domain")

    async with running_agent(tmp_path) as (app, _):
        services = app[SERVICES]
        store = services.store
        sr = store.get("pool", services.host.pool_ref)["default_SR"]
        vm = await call_internal(services, "VM.create", {"name_label": "cp",
                                                         "memory_static_max": str(2**28)})
        disk = await call_internal(services, "VDI.create", {
            "SR": sr, "virtual_size": str(2**20), "type": "user", "name_label": "d"})
        await call_internal(services, "VBD.create", {"VM": vm, "VDI": disk, "userdevice": "0",
                                                     "mode": "RW", "type": "Disk"})
        await call_internal(services, "VM.start", vm, False, False)
        before = (set(store.all("VM")), set(store.all("VDI")))
        monkeypatch.setattr(SimulatedDomain, "save", failing_save)
        with pytest.raises(Exception, match="disk full"):
            await call_internal(services, "VM.checkpoint", vm, "doomed")
        assert (set(store.all("VM")), set(store.all("VDI"))) == before
        assert store.get("VM", vm)["power_state"] == "Running"
        assert not services.domains.get(store.get("VM", vm)["uuid"]).paused
        await call_internal(services, "VM.hard_shutdown", vm)
