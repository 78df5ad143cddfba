"""message.* with the official SDK against the real server: create about an object, the
queries by object and time, events, destroy; and the agent's own VM_CRASHED (the QEMU tests
post one for a guest that died while the agent was down)."""

from __future__ import annotations

import XenAPI
import pytest


def test_create_query_events_destroy(server, xenapi):
    x = xenapi.xenapi
    vm = x.VM.create({"name_label": "alerted", "memory_static_max": str(2**28), "VCPUs_max": "1"})
    uuid = x.VM.get_uuid(vm)
    token = x.event_from(["message"], "", 0.0)["token"]
    ref = x.message.create("BACKUP_FAILED", "3", "VM", uuid, "the nightly job failed")
    rec = x.message.get_record(ref)
    assert (rec["name"], rec["priority"], rec["cls"], rec["obj_uuid"], rec["body"]) == \
        ("BACKUP_FAILED", "3", "VM", uuid, "the nightly job failed")
    assert x.message.get_by_uuid(rec["uuid"]) == ref
    assert ref in x.message.get("VM", uuid, "19700101T00:00:00Z")
    host_vm = x.host.get_control_domain(x.host.get_all()[0])     # another object: not its
    assert ref not in x.message.get("VM", x.VM.get_uuid(host_vm), "19700101T00:00:00Z")
    assert ref in x.message.get_since("19700101T00:00:00Z")
    assert x.message.get_since("29990101T00:00:00Z") == {}
    events = x.event_from(["message"], token, 5.0)["events"]
    assert any(e["ref"] == ref and e["operation"] == "add" for e in events)
    with pytest.raises(XenAPI.Failure) as e:
        x.message.create("X", "1", "VM", "00000000-0000-0000-0000-000000000000", "")
    assert e.value.details[0] == "UUID_INVALID"
    with pytest.raises(XenAPI.Failure) as e:
        x.message.create("X", "1", "Toaster", uuid, "")
    assert e.value.details[0] == "INVALID_VALUE"
    other = x.message.create("HOST_NOTE", "5", "Host", x.host.get_uuid(x.host.get_all()[0]), "")
    x.message.destroy_many([ref, other])
    assert ref not in x.message.get_all() and other not in x.message.get_all()
    with pytest.raises(XenAPI.Failure) as e:
        x.message.destroy(ref)
    assert e.value.details[0] == "HANDLE_INVALID"
    x.VM.destroy(vm)
