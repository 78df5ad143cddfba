"""Each kind of bad call gets its own XenAPI error code, over the raw XML-RPC wire."""

from __future__ import annotations

import xmlrpc.client

import pytest


@pytest.fixture
def raw(server):
    proxy = xmlrpc.client.ServerProxy(server.url)
    sid = proxy.session.login_with_password("root", server.password)["Value"]
    yield proxy, sid
    proxy.session.logout(sid)


def _err(result):
    assert result["Status"] == "Failure", result
    return result["ErrorDescription"]


def test_unknown_method(raw):
    proxy, sid = raw
    assert _err(proxy.VM.fly(sid)) == ["MESSAGE_METHOD_UNKNOWN", "VM.fly"]
    assert _err(getattr(proxy, "Async.VM.get_record")(sid, "x"))[0] == "MESSAGE_METHOD_UNKNOWN"


def test_parameter_count(raw):
    proxy, sid = raw
    assert _err(proxy.VM.get_record(sid)) == ["MESSAGE_PARAMETER_COUNT_MISMATCH",
                                              "VM.get_record", "2", "1"]
    assert _err(proxy.session.login_with_password("root"))[0] == "MESSAGE_PARAMETER_COUNT_MISMATCH"


def test_bad_refs_and_uuids(raw):
    proxy, sid = raw
    assert _err(proxy.VM.get_record(sid, "OpaqueRef:nope")) == ["HANDLE_INVALID", "VM",
                                                                "OpaqueRef:nope"]
    assert _err(proxy.SR.get_by_uuid(sid, "no-such-uuid")) == ["UUID_INVALID", "SR",
                                                               "no-such-uuid"]
    assert _err(proxy.VM.get_all(sid + "x"))[0] == "SESSION_INVALID"


def test_field_types(raw):
    proxy, sid = raw
    vm = proxy.VM.get_by_name_label(sid, "Debian Etch 4.0")["Value"][0]
    assert _err(proxy.VM.set_memory_static_max(sid, vm, "lots")) == [
        "FIELD_TYPE_ERROR", "value"]
    assert _err(proxy.VM.set_name_label(sid, vm, 42)) == ["FIELD_TYPE_ERROR", "value"]
    assert _err(proxy.VM.set_actions_after_crash(sid, vm, "explode")) == [
        "INVALID_VALUE", "value", "explode"]
    # 64-bit values as strings are accepted, as xapi's clients send them
    assert proxy.VM.set_memory_static_max(sid, vm, str(2**33))["Status"] == "Success"
    assert proxy.VM.get_memory_static_max(sid, vm)["Value"] == str(2**33)
    # RO fields have no setter
    assert _err(proxy.VM.set_power_state(sid, vm, "Running"))[0] == "MESSAGE_METHOD_UNKNOWN"


def test_maps_and_sets(raw):
    proxy, sid = raw
    vm = proxy.VM.get_by_name_label(sid, "Debian Etch 4.0")["Value"][0]
    uuid = proxy.VM.get_uuid(sid, vm)["Value"]
    assert proxy.VM.add_to_other_config(sid, vm, "k", "v")["Status"] == "Success"
    assert _err(proxy.VM.add_to_other_config(sid, vm, "k", "w")) == [
        "MAP_DUPLICATE_KEY", "VM", "other_config", uuid, "k"]
    assert proxy.VM.remove_from_other_config(sid, vm, "k")["Status"] == "Success"
    assert proxy.VM.remove_from_other_config(sid, vm, "k")["Status"] == "Success"
    proxy.VM.add_tags(sid, vm, "blue")
    proxy.VM.add_tags(sid, vm, "blue")
    assert proxy.VM.get_tags(sid, vm)["Value"] == ["blue"]
    proxy.VM.remove_tags(sid, vm, "blue")
    assert proxy.VM.get_tags(sid, vm)["Value"] == []


def test_get_all_records_where(raw):
    proxy, sid = raw
    every = proxy.VM.get_all_records_where(sid, "true")["Value"]
    assert len(every) == len(proxy.VM.get_all(sid)["Value"])
    templates = proxy.VM.get_all_records_where(
        sid, 'field "is_a_template" = "true" and not (field "name_label" = "Debian Etch 4.0")'
    )["Value"]
    assert templates and all(r["is_a_template"] for r in templates.values())
    assert all(r["name_label"] != "Debian Etch 4.0" for r in templates.values())
    assert _err(proxy.VM.get_all_records_where(sid, 'field "x" ='))[0] == "INVALID_VALUE"


def test_create_with_bad_refs_leaves_nothing(raw):
    proxy, sid = raw
    before = len(proxy.VBD.get_all(sid)["Value"])
    assert _err(proxy.VBD.create(sid, {"VM": "OpaqueRef:gone", "VDI": "OpaqueRef:NULL"}))[0] == \
        "HANDLE_INVALID"
    assert len(proxy.VBD.get_all(sid)["Value"]) == before


def test_event_errors(raw):
    proxy, sid = raw
    assert _err(proxy.event.next(sid)) == ["SESSION_NOT_REGISTERED", sid]
    assert _err(getattr(proxy, "event.from")(sid, ["vm"], "garbage", 1.0)) == [
        "EVENT_FROM_TOKEN_PARSE_FAILURE", "garbage"]
    assert _err(getattr(proxy, "event.from")(sid, ["nosuchclass"], "", 1.0)) == [
        "EVENT_SUBSCRIPTION_PARSE_FAILURE", "nosuchclass"]
