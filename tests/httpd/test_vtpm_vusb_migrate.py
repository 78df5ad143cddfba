"""VTPM (Xen Orchestra backs its state up and restores it), VUSB (no USB here) and
VM.pool_migrate (a localhost migration) through the SDK against the real server."""

from __future__ import annotations

import base64

import pytest

from tests.failures import fails


@pytest.fixture
def vm(xenapi):
    x = xenapi.xenapi
    ref = x.VM.create({"name_label": "tpm", "memory_static_max": str(2**28)})
    yield ref
    if x.VM.get_power_state(ref) != "Halted":
        x.VM.hard_shutdown(ref)
    x.VM.destroy(ref)


def test_vtpm_lifecycle_copies_and_destroy(xenapi, vm):
    x = xenapi.xenapi
    tpm = x.VTPM.create(vm, False)
    assert x.VM.get_VTPMs(vm) == [tpm]
    rec = x.VTPM.get_record(tpm)
    assert rec["VM"] == vm and rec["persistence_backend"] == "xapi" and rec["is_unique"] is False
    assert x.VTPM.get_contents(tpm) == ""
    fails("VTPM_MAX_AMOUNT_REACHED", x.VTPM.create, vm, False)
    state = base64.b64encode(bytes(range(256)) * 64).decode()
    x.VTPM.set_contents(tpm, state)
    assert x.VTPM.get_contents(tpm) == state
    fails("INVALID_VALUE", x.VTPM.set_contents, tpm, "not base64!")
    fails("INVALID_VALUE", x.VTPM.set_contents, tpm, "A" * ((1 << 20) + 4))   # oversized
    fails("INVALID_VALUE", x.VTPM.set_contents, tpm, state[:-3])             # truncated
    assert x.VTPM.get_contents(tpm) == state                      # the refusals kept it

    clone = x.VM.clone(vm, "tpm-clone")
    (copied,) = x.VM.get_VTPMs(clone)
    assert copied != tpm and x.VTPM.get_contents(copied) == state
    secret = x.VTPM.get_record(copied)["contents"]
    x.VM.destroy(clone)
    fails("HANDLE_INVALID", x.VTPM.get_record, copied)
    fails("HANDLE_INVALID", x.secret.get_record, secret)         # no orphan secret

    x.VM.start(vm, False, False)
    fails("VM_BAD_POWER_STATE", x.VTPM.set_contents, tpm, "")
    fails("VM_BAD_POWER_STATE", x.VTPM.destroy, tpm)
    x.VM.hard_shutdown(vm)
    x.VTPM.destroy(tpm)
    assert x.VM.get_VTPMs(vm) == []


def test_unique_vtpm_copies_start_empty(xenapi, vm):
    x = xenapi.xenapi
    tpm = x.VTPM.create(vm, True)
    x.VTPM.set_contents(tpm, base64.b64encode(b"unique").decode())
    clone = x.VM.clone(vm, "tpm-unique-clone")
    try:
        (copied,) = x.VM.get_VTPMs(clone)
        assert x.VTPM.get_is_unique(copied) is True and x.VTPM.get_contents(copied) == ""
    finally:
        x.VM.destroy(clone)


def test_no_usb_here(xenapi, vm):
    x = xenapi.xenapi
    assert x.PUSB.get_all() == [] and x.USB_group.get_all() == [] and x.VUSB.get_all() == []
    assert x.VM.get_VUSBs(vm) == []
    fails("HANDLE_INVALID", x.VUSB.create, vm, "OpaqueRef:none", {})
    fails("HANDLE_INVALID", x.VUSB.unplug, "OpaqueRef:none")
    fails("HANDLE_INVALID", x.VUSB.destroy, "OpaqueRef:none")


def test_pool_migrate_is_a_localhost_migration(xenapi):
    x = xenapi.xenapi
    host = x.host.get_all()[0]
    vm = x.VM.get_by_name_label("demo")[0]
    fails("VM_BAD_POWER_STATE", x.VM.pool_migrate, vm, host, {})
    x.VM.start(vm, False, False)
    try:
        assert "pool_migrate" in x.VM.get_allowed_operations(vm)
        domid = int(x.VM.get_domid(vm))
        x.host.disable(host)
        fails("HOST_DISABLED", x.VM.pool_migrate, vm, host, {})
        x.host.enable(host)
        task = x.Async.VM.pool_migrate(vm, host, {"live": "true"})
        while x.task.get_status(task) == "pending":
            pass
        assert x.task.get_status(task) == "success", x.task.get_error_info(task)
        assert x.VM.get_power_state(vm) == "Running" and x.VM.get_resident_on(vm) == host
        assert int(x.VM.get_domid(vm)) != domid                  # a new domain took over
        assert x.VM.get_current_operations(vm) == {}
    finally:
        x.VM.hard_shutdown(vm)
