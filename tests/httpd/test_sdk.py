"""The official `xenapi` SDK, unchanged, against the real server (issue 2 acceptance)."""

from __future__ import annotations

import threading
import time

import pytest
import XenAPI

from httpd.model.datamodel import CLASSES


def test_login_and_api_version(xenapi):
    assert xenapi.API_version == "2.21"
    assert xenapi.xenapi.session.get_this_host(xenapi.handle) == xenapi.xenapi.pool.get_master(
        xenapi.xenapi.pool.get_all()[0])


@pytest.mark.parametrize("cls", sorted(CLASSES))
def test_get_all_records_of_every_class(xenapi, cls):
    records = getattr(xenapi.xenapi, cls).get_all_records()
    assert isinstance(records, dict)
    for ref, rec in records.items():
        assert ref.startswith("OpaqueRef:")
        assert set(rec) == {f.name for f in CLASSES[cls].fields}, cls


def test_first_start_objects(xenapi):
    x = xenapi.xenapi
    pool = x.pool.get_record(x.pool.get_all()[0])
    host = x.host.get_record(pool["master"])
    assert host["hostname"] and host["address"] and host["API_version_major"] == "2"
    dom0 = x.VM.get_record(host["control_domain"])
    assert dom0["is_control_domain"] and dom0["power_state"] == "Running"
    assert sorted(x.console.get_protocol(c) for c in dom0["consoles"]) == ["rfb", "vt100"]
    sr = x.SR.get_record(pool["default_SR"])
    assert sr["name_label"] == "Local storage" and sr["other_config"]["i18n-key"] == "local-storage"
    pbd = x.PBD.get_record(sr["PBDs"][0])
    assert pbd["currently_attached"] and pbd["host"] == pool["master"]
    templates = {r["name_label"] for r in x.VM.get_all_records().values() if r["is_a_template"]}
    assert "Debian Etch 4.0" in templates and len(templates) >= 3
    # 64-bit ints come as strings over XML-RPC, as from xapi
    t = x.VM.get_by_name_label("Debian Etch 4.0")[0]
    assert x.VM.get_memory_static_max(t) == str(256 * 2**20)


def test_async_call_awaited_with_event_from(xenapi):
    x = xenapi.xenapi
    vdi = x.VDI.get_all()  # noqa: F841 - any call works before
    net = x.network.get_all()[0]
    task = x.Async.network.create({"name_label": "async-net", "bridge": "xenbr99"})
    token = ""
    status = "pending"
    deadline = time.time() + 10
    while status == "pending" and time.time() < deadline:
        ev = x.event_from([f"task/{task}"], token, 5.0)
        token = ev["token"]
        for e in ev["events"]:
            if e["class"] == "task" and e["ref"] == task and "snapshot" in e:
                status = e["snapshot"]["status"]
    assert status == "success"
    rec = x.task.get_record(task)
    assert rec["progress"] == 1.0 and rec["result"].startswith("<value>OpaqueRef:")
    new_net = rec["result"][len("<value>"):-len("</value>")]
    assert x.network.get_name_label(new_net) == "async-net"
    assert new_net != net
    x.task.destroy(task)
    x.network.destroy(new_net)
    with pytest.raises(XenAPI.Failure) as e:
        x.task.get_record(task)
    assert e.value.details[0] == "HANDLE_INVALID"


def test_async_failure_lands_in_task(xenapi):
    x = xenapi.xenapi
    task = x.Async.VBD.destroy("OpaqueRef:nope")
    for _ in range(100):
        if x.task.get_status(task) != "pending":
            break
        time.sleep(0.02)
    assert x.task.get_status(task) == "failure"
    assert x.task.get_error_info(task) == ["HANDLE_INVALID", "VBD", "OpaqueRef:nope"]


def test_watch_all_events_loop(server, xenapi):
    """The guide's watch-all-events.py, in a thread, sees add, mod and del."""
    seen: list[tuple[str, str, str]] = []
    watcher = server.session()
    watcher.xenapi.event.register(["*"])
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                for event in watcher.xenapi.event.next():
                    name = event.get("snapshot", {}).get("name_label", "(unknown)")
                    seen.append((event["class"], event["operation"], name))
            except XenAPI.Failure as e:
                if e.details == ["EVENTS_LOST"]:
                    watcher.xenapi.event.register(["*"])
                else:
                    return
            except Exception:  # noqa: BLE001 - the SDK's re-login after SESSION_INVALID
                return

    th = threading.Thread(target=loop, daemon=True)
    th.start()
    x = xenapi.xenapi
    net = x.network.create({"name_label": "watched"})
    x.network.set_name_label(net, "watched-2")
    x.network.destroy(net)
    deadline = time.time() + 10
    while time.time() < deadline and ("network", "del", "(unknown)") not in seen:
        time.sleep(0.05)
    stop.set()
    # Log the watcher out from another connection: its blocked event.next must wake up.
    import xmlrpc.client
    xmlrpc.client.ServerProxy(server.url).session.logout(watcher.handle)
    th.join(10)
    assert ("network", "add", "watched") in seen
    assert ("network", "mod", "watched-2") in seen
    assert ("network", "del", "(unknown)") in seen
    assert not th.is_alive()
    assert not any(c == "task" for c, _, _ in seen)   # the guide: no task events on next


def test_session_invalid_retry(server):
    s = server.session()
    old = s.handle
    # log out behind the SDK's back: its next call gets SESSION_INVALID, logs in and retries
    other = server.session()
    other.xenapi.session.logout()
    import xmlrpc.client
    proxy = xmlrpc.client.ServerProxy(server.url)
    assert proxy.session.logout(old)["Status"] == "Success"
    assert s.xenapi.pool.get_all()
    assert s.handle != old
    s.xenapi.session.logout()


def test_logout_invalidates(server):
    s = server.session()
    ref = s.handle
    s.xenapi.session.logout()
    import xmlrpc.client
    proxy = xmlrpc.client.ServerProxy(server.url)
    assert proxy.VM.get_all(ref) == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", ref]}


def test_bad_password(server):
    s = XenAPI.Session(server.url)
    with pytest.raises(XenAPI.Failure) as e:
        s.xenapi.login_with_password("root", "wrong", "2.21", "tests")
    assert e.value.details[0] == "SESSION_AUTHENTICATION_FAILED"
    with pytest.raises(XenAPI.Failure):
        s.xenapi.login_with_password("alice", server.password)
