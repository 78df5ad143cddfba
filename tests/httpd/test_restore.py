"""`/import?restore=true` of a VM whose uuid still exists does what xapi does: refused unless
the import is newer or force=true, which replaces a halted VM (its disks stay); a running one
is refused; the uuid and MACs are kept; a refusal leaves everything as it was."""

from __future__ import annotations

import subprocess

import pytest

from tests.server import PASSWORD


def _curl(*args: str) -> tuple[int, str]:
    r = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", *args], capture_output=True,
                       text=True, timeout=120, check=True)
    body, _, code = r.stdout.rpartition("\n")
    return int(code), body


@pytest.fixture
def exported(server, tmp_path):
    s = server.session()
    x = s.xenapi
    tpl = x.VM.get_by_name_label("Debian Etch 4.0")[0]
    vm = x.VM.clone(tpl, "restored")
    x.VM.set_is_a_template(vm, False)
    x.VM.remove_from_other_config(vm, "disks")
    net = x.network.get_all()[0]
    x.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "", "MTU": 1500,
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    vdi = x.VDI.create({"name_label": "restored disk", "SR": x.pool.get_default_SR(
        x.pool.get_all()[0]), "virtual_size": 2**20, "type": "user", "sharable": False,
        "read_only": False, "other_config": {}})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    uuid = x.VM.get_uuid(vm)
    xva = tmp_path / "restored.xva"
    code, _ = _curl("-o", str(xva), f"{server.url.replace('//', f'//root:{PASSWORD}@')}"
                                    f"/export?uuid={uuid}")
    assert code == 200
    yield x, vm, uuid, xva
    for v in x.VM.get_by_name_label("restored"):
        if x.VM.get_power_state(v) != "Halted":
            x.VM.hard_shutdown(v)
        x.VM.destroy(v)
    s.xenapi.session.logout()


def _import(server, xva, query: str) -> tuple[int, str]:
    base = server.url.replace("//", f"//root:{PASSWORD}@")
    return _curl("-T", str(xva), f"{base}/import?{query}")


def test_restore_over_an_existing_vm(server, exported):
    x, vm, uuid, xva = exported
    macs = sorted(x.VIF.get_MAC(v) for v in x.VM.get_VIFs(vm))
    old_vdi = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    vms, vdis = len(x.VM.get_all()), len(x.VDI.get_all())
    # the same version: refused, nothing made
    code, body = _import(server, xva, "restore=true")
    assert code == 409 and "VM_TO_IMPORT_IS_NOT_NEWER_VERSION" in body, body
    assert (len(x.VM.get_all()), len(x.VDI.get_all())) == (vms, vdis)
    assert x.VM.get_by_uuid(uuid) == vm
    # running: refused, force=true or not
    x.VM.start(vm, False, False)
    for query in ("restore=true", "restore=true&force=true"):
        code, body = _import(server, xva, query)
        assert code == 409 and "VM_BAD_POWER_STATE" in body, body
        assert (len(x.VM.get_all()), len(x.VDI.get_all())) == (vms, vdis)
    x.VM.hard_shutdown(vm)
    # halted, force=true: replaced; same uuid and MACs, new disks, the old disk kept
    code, body = _import(server, xva, "restore=true&force=true")
    assert code == 200, body
    new = body.strip()
    assert new != vm and x.VM.get_by_uuid(uuid) == new
    assert len(x.VM.get_all()) == vms
    assert sorted(x.VIF.get_MAC(v) for v in x.VM.get_VIFs(new)) == macs
    assert x.VBD.get_VDI(x.VM.get_VBDs(new)[0]) != old_vdi
    assert x.VDI.get_uuid(old_vdi)                 # still there: xapi leaves disks
    x.VDI.destroy(old_vdi)


def test_restore_of_a_vm_that_is_gone_keeps_its_uuid(server, exported):
    x, vm, uuid, xva = exported
    x.VM.destroy(vm)
    code, body = _import(server, xva, "restore=true")
    assert code == 200, body
    assert x.VM.get_uuid(body.strip()) == uuid
