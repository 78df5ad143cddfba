"""Issue 14: what an attack on the running server broke, each reproduced against the real
daemon (the item number in each test's name)."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import socket
import subprocess
import tarfile
import urllib.error
import urllib.request
import xmlrpc.client

import pytest

from httpd.core.unfinished import mark, marked
from httpd.model.xtypes import SetOf, XType
from httpd.web.appkeys import SERVICES
from httpd.web.rpc import MAX_BATCH, SESSION_WITHIN, SMALL_BODY
from tests.in_process import PASSWORD, running_agent
from tests.scenarios import run_scenario


def _post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _json(server, method: str, *params) -> dict:
    status, body = _post(server.url + "/jsonrpc", json.dumps(
        {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}).encode())
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def sid(server):
    return _json(server, "session.login_with_password", "root", server.password)["result"]


def test_1_batches_are_bounded_and_need_sessions(server, sid):
    flood = json.dumps([{"method": "system.listMethods", "id": i} for i in range(10_000)])
    status, body = _post(server.url + "/jsonrpc", flood.encode())      # 448 KiB, no session
    assert status == 413 and b"must name a live session" in body
    over = json.dumps([{"method": "system.listMethods", "id": i} for i in range(MAX_BATCH + 1)])
    status, body = _post(server.url + "/jsonrpc", over.encode())
    assert status == 400 and b"more than %d calls" % MAX_BATCH in body

    anonymous = json.dumps([{"jsonrpc": "2.0", "method": "system.listMethods", "id": i}
                            for i in range(MAX_BATCH)]).encode()
    status, body = _post(server.url + "/jsonrpc", anonymous)
    replies = json.loads(body)
    assert status == 200 and len(replies) == MAX_BATCH
    assert all(r["error"]["code"] == -32600 and "without a session in a batch" in r["error"]["message"]
               for r in replies)
    assert len(body) < 3 * len(anonymous)     # the reply costs about what the request did

    mixed = [{"jsonrpc": "2.0", "method": "pool.get_all", "params": [sid], "id": 1},
             {"jsonrpc": "2.0", "method": "pool.get_all", "params": ["OpaqueRef:bad"], "id": 2},
             {"jsonrpc": "2.0", "method": "session.login_with_password",
              "params": ["root", server.password], "id": 3}]
    status, body = _post(server.url + "/jsonrpc", json.dumps(mixed).encode())
    one, two, three = json.loads(body)
    assert len(one["result"]) == 1
    assert two["error"]["message"] == "SESSION_INVALID"
    assert three["error"]["code"] == -32600


def test_8_big_bodies_need_a_live_session_first(server, sid):
    x = xmlrpc.client.ServerProxy(server.url)
    vm = x.VM.get_all(sid)["Value"][0]
    big = "d" * (SMALL_BODY * 4)
    anonymous = xmlrpc.client.dumps(("OpaqueRef:" + "0" * 8 + "-0000-0000-0000-" + "0" * 12,
                                     vm, big), "VM.set_name_description").encode()
    status, body = _post(server.url, anonymous, "text/xml")
    assert status == 413 and b"must name a live session" in body
    padded = xmlrpc.client.dumps((big, sid), "VM.get_all").encode()    # session too late
    assert _post(server.url, padded, "text/xml")[0] == 413
    ok = xmlrpc.client.dumps((sid, vm, big), "VM.set_name_description").encode()
    assert ok.index(sid.encode()) < SESSION_WITHIN
    status, body = _post(server.url, ok, "text/xml")
    assert status == 200 and b"Success" in body
    assert x.VM.get_name_description(sid, vm)["Value"] == big
    x.VM.set_name_description(sid, vm, "")
    status, body = _post(server.url + "/jsonrpc", json.dumps(
        {"method": "VM.set_name_description", "params": ["OpaqueRef:x", vm, big],
         "id": 1}).encode())
    assert status == 413


def test_4_lone_surrogates_are_refused_at_decode_and_nothing_is_kept(server, sid):
    x = xmlrpc.client.ServerProxy(server.url)
    vm = x.VM.get_all(sid)["Value"][0]
    before = x.VM.get_name_description(sid, vm)["Value"]
    call = {"jsonrpc": "2.0", "method": "VM.set_name_description", "id": 1,
            "params": [sid, vm, "x\udc80"]}
    status, body = _post(server.url + "/jsonrpc", json.dumps(call).encode())
    assert status == 400 and b"lone surrogate" in body
    raw = json.dumps({**call, "params": [sid, vm, "PLACE"]}).encode().replace(
        b"PLACE", b"x\xed\xb2\x80")                        # the surrogate as raw bytes
    assert _post(server.url + "/jsonrpc", raw)[0] == 400
    xml = xmlrpc.client.dumps((sid, vm, "PLACE"), "VM.set_name_description").encode()
    assert _post(server.url, xml.replace(b"PLACE", b"x&#xDC80;"), "text/xml")[0] == 400
    pair = _json(server, "VM.set_name_description", sid, vm, "emoji \U0001f600")
    assert "error" not in pair                              # a real pair is text
    assert x.VM.get_name_description(sid, vm)["Value"] == "emoji \U0001f600"
    x.VM.set_name_description(sid, vm, before)
    assert x.VM.get_all_records(sid)["Status"] == "Success"
    assert _post(server.url + "/jsonrpc", json.dumps(
        {"method": "event.from", "params": [sid, ["vm"], "", 0.0], "id": 2}).encode())[0] == 200


class _Counted(XType):
    """Members that count the comparisons a set check makes."""
    name = "counted"
    eq = 0

    def check(self, value, field):
        return _Member(value)


class _Member:
    def __init__(self, v) -> None:
        self.v = v

    def __eq__(self, other) -> bool:
        _Counted.eq += 1
        return self.v == other.v

    def __hash__(self) -> int:
        return hash(self.v)


def test_5_set_checks_are_linear(server, sid):
    _Counted.eq = 0
    out = SetOf(_Counted()).check(list(range(5000)) * 2, "tags")
    assert [m.v for m in out] == list(range(5000))
    assert _Counted.eq <= 5000                     # one per duplicate, not one per pair
    x = xmlrpc.client.ServerProxy(server.url)
    vm = x.VM.get_all(sid)["Value"][0]
    tags = [f"t{i}" for i in range(20_000)]
    assert x.VM.set_tags(sid, vm, tags + tags[:10])["Status"] == "Success"
    assert x.VM.get_tags(sid, vm)["Value"] == tags
    x.VM.set_tags(sid, vm, [])
    r = getattr(x, "event.from")(sid, ["vm", "VM", "host"] * 7_000, "", 0.0)
    assert r["Status"] == "Success", r


def test_15_deep_nesting_is_a_clear_error(server, sid):
    status, body = _post(server.url + "/jsonrpc", b"[" * 30_000 + b"]" * 30_000)
    assert status == 400 and b"Parse error: nested too deeply" in body
    assert "Traceback" not in server.drain_output()
    x = xmlrpc.client.ServerProxy(server.url)
    r = x.VM.get_all_records_where(sid, "not " * 50_000 + "true")
    assert r["Status"] == "Failure" and r["ErrorDescription"][0] == "INVALID_VALUE"
    assert "nested deeper" in r["ErrorDescription"][2]
    chain = " and ".join(['field "power_state" = "Halted"'] * 20_000)
    assert x.VM.get_all_records_where(sid, chain)["Status"] == "Success"
    assert x.VM.get_all_records_where(sid, "(" * 65 + "true" + ")" * 65)["Status"] == "Failure"
    assert x.VM.get_all_records_where(sid, "(" * 60 + "true" + ")" * 60)["Status"] == "Success"


async def test_19_an_abandoned_long_poll_ends_with_its_connection(tmp_path):
    async with running_agent(tmp_path) as (app, urls):
        port = int(next(u for u in urls if u.startswith("http://")).rsplit(":", 1)[1])

        async def post(body: dict):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = json.dumps(body).encode()
            writer.write(b"POST /jsonrpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
            await writer.drain()
            return reader, writer

        async def call(method: str, *params):
            reader, writer = await post({"method": method, "id": 1, "params": list(params)})
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            writer.close()
            return json.loads(await reader.readexactly(length))["result"]

        sid = await call("session.login_with_password", "root", PASSWORD)
        token = (await call("event.from", sid, ["vm"], "", 0.0))["token"]

        def awaiting(task) -> list[str]:     # the names along its chain of awaits
            names, coro = [], task.get_coro()
            while True:
                if isinstance(coro, asyncio.Task):
                    coro = coro.get_coro()
                if not hasattr(coro, "cr_code"):
                    return names
                names.append(coro.cr_code.co_name)
                coro = coro.cr_await

        def handlers() -> int:               # tasks waiting inside event.from
            return sum(1 for t in asyncio.all_tasks() if not t.done() and
                       "from_" in awaiting(t))
        await asyncio.sleep(0.1)
        baseline = handlers()
        polls = [await post({"method": "event.from", "id": 2,
                             "params": [sid, ["vm"], token, 300.0]}) for _ in range(20)]
        for _ in range(100):
            if handlers() >= baseline + 20:
                break
            await asyncio.sleep(0.05)
        assert handlers() >= baseline + 20               # all twenty are waiting
        for _, w in polls:
            w.close()
        for _ in range(200):                             # ends as the agent sees the close
            if handlers() <= baseline:
                break
            await asyncio.sleep(0.05)
        assert handlers() <= baseline
        # and a call that is not a long poll still runs to its end when its client leaves
        agent = app[SERVICES]
        vm = agent.store.create("VM", {"name_label": "before"})
        _, w = await post({"method": "VM.set_name_label", "id": 3,
                           "params": [sid, vm, "after"]})
        w.close()
        for _ in range(100):
            if agent.store.get("VM", vm)["name_label"] == "after":
                break
            await asyncio.sleep(0.05)
        assert agent.store.get("VM", vm)["name_label"] == "after"


def test_16_a_client_gone_mid_body_logs_nothing(server):
    server.drain_output()
    for path in ("/jsonrpc", "/RPC2"):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"me"
                      % path.encode())
    for _ in range(100):                       # heads aiohttp refuses: no Host, a bad line
        for head in (b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Line\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(head)
                assert s.recv(100).startswith(b"HTTP/1.")
    status, _ = _post(server.url + "/jsonrpc", b'{"method": "system.listMethods", "id": 1}')
    assert status == 200                       # it is still serving
    logged = server.drain_output(wait=0.5)
    assert "Traceback" not in logged and logged.count("\n") <= 10, logged


@pytest.mark.parametrize("size", ["\u00b2", "9" * 5000])
def test_9_a_bad_tar_size_is_an_import_error(server, sid, tmp_path, size):
    t = tarfile.TarInfo("ova.xml")
    t.pax_headers = {"size": size}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(t, io.BytesIO(b""))
    path = tmp_path / "bad.xva.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    x = xmlrpc.client.ServerProxy(server.url)
    vms = x.VM.get_all(sid)["Value"]
    url = server.url.replace("http://", f"http://root:{server.password}@") + "/import"
    r = subprocess.run(["curl", "-sS", "-T", str(path), "-D", "-", url], capture_output=True,
                       text=True, check=True)
    assert "HTTP/1.1 400" in r.stdout.replace("HTTP/1.1 100 Continue", ""), r.stdout
    assert "x-xenapi-error: import_error" in r.stdout.lower() and "pax size" in r.stdout
    assert "task-id:" in r.stdout.lower()
    assert x.VM.get_all(sid)["Value"] == vms


def test_12_an_upload_takes_only_a_pending_task_of_its_own(server, sid):
    x = xmlrpc.client.ServerProxy(server.url)
    done = x.task.create(sid, "finished", "")["Value"]
    x.task.set_status(sid, done, "success")
    other = x.session.login_with_password("root", server.password)["Value"]
    theirs = x.task.create(other, "someone else's", "")["Value"]
    for task, session, why in ((done, sid, "is success, not pending"),
                               (theirs, sid, "belongs to another session")):
        r = subprocess.run(["curl", "-sS", "-T", "-", "-D", "-",
                            f"{server.url}/import?session_id={session}&task_id={task}"],
                           input=b"not an xva", capture_output=True, check=True)
        assert b"HTTP/1.1 409 Conflict" in r.stdout, r.stdout
        assert why.encode() in r.stdout and b"OPERATION_NOT_ALLOWED" in r.stdout
    assert x.task.get_status(sid, done)["Value"] == "success"         # left as it ended
    assert x.task.get_status(sid, theirs)["Value"] == "pending"
    x.session.logout(other)


def test_14_rrd_saves_cut_short_are_swept_at_start(fresh_server):
    rrd = fresh_server.data_dir / "rrd"
    fresh_server.stop()                                  # saves every RRD
    host_file = next(p for p in rrd.iterdir() if p.name.startswith("host-"))
    left = [rrd / f".{host_file.name}.4242.tmp", rrd / ".vm-x.xml.77.tmp"]
    for p in left:
        p.write_bytes(b"<rrd><version>0003")            # what kill -9 mid-save leaves
    fresh_server.start()
    assert not [p for p in left if p.exists()] and host_file.exists()
    assert "half-written" in "".join(fresh_server.output)


def test_11_no_api_call_can_mark_a_vm_for_removal(fresh_server):
    x = fresh_server.session().xenapi
    vm = x.VM.get_by_name_label("demo")[0]
    x.VM.add_to_other_config(vm, "xcp-httpd-import-task", "")      # the old marker
    x.VM.add_to_other_config(vm, "unfinished", "true")
    methods = xmlrpc.client.ServerProxy(fresh_server.url).system.listMethods()
    assert not any(m.lower().startswith("unfinished") for m in methods)
    fresh_server.kill9()
    fresh_server.start()
    x = fresh_server.session().xenapi
    assert x.VM.get_by_name_label("demo") == [vm]
    assert "removing" not in "".join(fresh_server.output)


async def test_6_a_copy_is_marked_until_its_data_is_complete(tmp_path):
    async with running_agent(tmp_path) as (app, _):
        agent = app[SERVICES]
        sr = agent.vdis.default_sr()
        src = await agent.vdis.create(sr, 8 * 2**20, {"name_label": "source"})
        with open(agent.vdis.path(src), "r+b") as f:
            f.write(b"data" * 100_000)
        seen = []

        def crash_here(done: int) -> None:        # inside the copy: what a crash would leave
            seen.append(dict(marked(agent.store)))
            raise OSError("simulated crash")
        before = set(agent.store.all("VDI")), sorted(os.listdir(agent.vdis.path(src).parent))
        with pytest.raises(OSError):
            await agent.vdis.copy(src, check=crash_here)
        (left,) = seen[0]["VDI"]                  # the new record was there, marked
        assert agent.store.find("VDI", left) is None
        assert (set(agent.store.all("VDI")), sorted(os.listdir(agent.vdis.path(src).parent))) \
            == before and marked(agent.store) == {}
        copy = await agent.vdis.copy(src)
        assert marked(agent.store) == {} and agent.store.get("VDI", copy)["physical_utilisation"] > 0
        # what a crash mid-copy leaves (a marked record, a partial file) goes at the next start
        with agent.store.transaction():
            mark(agent.store, "VDI", copy, None)
        await agent.store.sync()
        copy_file = agent.vdis.path(copy)
    async with running_agent(tmp_path) as (app, _):
        agent = app[SERVICES]
        assert agent.store.find("VDI", copy) is None and agent.store.find("VDI", src)
        assert not copy_file.exists() and agent.vdis.path(src).exists()
        assert marked(agent.store) == {}


def _login_from(server, source: str, password: str) -> dict:
    """session.login_with_password over JSON-RPC from a chosen loopback address."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120,
                                      source_address=(source, 0))
    try:
        conn.request("POST", "/jsonrpc", json.dumps(
            {"jsonrpc": "2.0", "method": "session.login_with_password", "id": 1,
             "params": ["root", password]}), {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def test_3_password_guessing_is_slowed_per_source(server):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(40) as pool:
        guesses = [pool.submit(_login_from, server, "127.0.0.1", f"guess{i}") for i in range(40)]
        good = _login_from(server, "127.0.0.2", server.password)     # another source, meanwhile
        assert "result" in good, good
        answers = [g.result() for g in guesses]
    assert all(a["error"]["message"] == "SESSION_AUTHENTICATION_FAILED" for a in answers)
    refused = [a for a in answers if "too many attempts" in a["error"]["data"][1]]
    assert len(refused) >= 20       # most never reached a password check: the queue is bounded
    # the guessing source itself gets in with the right password, which clears its slowdown
    assert "result" in _login_from(server, "127.0.0.1", server.password)


def test_10_a_full_disk_is_sr_full_wherever_it_meets_a_client():
    """The one mapping (model.errors.internal_error), for RPC calls and HTTP transfers alike."""
    import errno
    from httpd.model.errors import http_status, internal_error
    full = internal_error(OSError(errno.ENOSPC, "No space left on device"))
    assert full.code == "SR_FULL" and http_status(full) == 507
    assert internal_error(OSError(errno.EIO, "I/O error")).code == "INTERNAL_ERROR"


def test_10_a_disk_that_fills_during_an_import_is_sr_full(tmp_path):
    r = run_scenario("tests.httpd.sr_full_scenario", tmp_path)
    statuses = sorted(a.split("\r\n", 1)[0].replace("HTTP/1.1 100 Continue", "").strip()
                      or a.split("\r\n\r\n", 1)[1].split("\r\n", 1)[0] for a in r["answers"])
    assert any("507" in a and "SR_FULL" in a for a in r["answers"]), r["answers"]
    assert not any("INTERNAL_ERROR" in a or " 500 " in a for a in r["answers"]), statuses
    for answer, vdi in zip(r["answers"], r["vdis"]):
        assert vdi["uploaded"] if " 200 " in answer else vdi["unchanged"], (answer, vdi)
    assert ("failure", ["SR_FULL"]) in [tuple(t) for t in r["tasks"]]
    assert not [f for f in r["sr_files"] if not f.endswith(".raw")], r["sr_files"]   # no .part


def test_13_metadata_buffering_is_bounded_across_uploads():
    """A 32 KiB upload whose ova.xml claims 60 MiB held ~135 MiB; 8 at once 1.2 GB. Now one
    ova.xml is at most 16 MiB, and those over 1 MiB share a 64 MiB budget, claimed when the tar
    header declares the size (before any byte of it is held): past it, TOO_BUSY (503)."""
    from httpd.jobs import Busy, MetadataBudget
    from xva.errors import XVAFormatError
    from xva.reader import XVAReader
    from xva.tar import tar_header

    budget = MetadataBudget(total=64 << 20)

    def start(claimed: int) -> XVAReader:
        r = XVAReader(claim=budget.claim)
        list(r.feed(tar_header("ova.xml", claimed) + b"<value>"))     # header, a little data
        return r

    with pytest.raises(XVAFormatError, match="too large"):
        start(60 << 20)
    assert budget.used == 0
    held = [start(15 << 20) for _ in range(4)]
    assert budget.used == 60 << 20
    with pytest.raises(Busy):
        start(15 << 20)                  # the transfer handler answers it TOO_BUSY, 503
    small = [start(512 << 10) for _ in range(20)]            # KiB-sized ones always pass
    held[0].abort()                                           # an import that ended
    assert budget.used == 45 << 20
    again = start(15 << 20)
    for r in [*held, *small, again]:
        r.abort()
    assert budget.used == 0


def test_18_running_vms_come_back_running_after_kill_9(fresh_server):
    import time
    x = fresh_server.session().xenapi
    vm = x.VM.get_by_name_label("demo")[0]
    x.VM.start(vm, False, False)
    uuid = x.VM.get_uuid(vm)
    state = fresh_server.data_dir / "domains" / f"{uuid}.state"
    deadline = time.monotonic() + 30
    while not state.exists() and time.monotonic() < deadline:    # kept while it runs
        time.sleep(0.05)
    assert state.exists()
    fresh_server.kill9()
    fresh_server.start()
    x = fresh_server.session().xenapi
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_resident_on(vm) == x.host.get_all()[0]
    x.VM.hard_shutdown(vm)
    deadline = time.monotonic() + 30
    while state.exists() and time.monotonic() < deadline:        # and dropped when it stops
        time.sleep(0.05)
    assert not state.exists()


async def test_consoles_listen_on_private_unix_sockets(tmp_path):
    """Also seen in the attack: a guest's console listened on a 127.0.0.1 port, open to every
    local process without the agent. Now each is a Unix socket of mode 0600 in a 0700
    directory; only the agent (CONNECT /console, authenticated) reaches it for others."""
    import stat
    from httpd.core.calls import call_internal
    from httpd.web.console import CONSOLES
    async with running_agent(tmp_path) as (app, _):
        agent = app[SERVICES]
        vm = agent.store.create("VM", {"name_label": "c", "power_state": "Halted"})
        await call_internal(agent, "VM.start", vm, False, False)
        dom = agent.domains.get(agent.store.get("VM", vm)["uuid"])
        host = app[CONSOLES].host_console
        for where in (dom.vnc_address, dom.vt100_address, host.rfb_address, host.vt100_address):
            assert isinstance(where, str), where
            mode = os.stat(where).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(os.path.dirname(where)).st_mode) == 0o700
        await call_internal(agent, "VM.hard_shutdown", vm)


def test_no_client_sees_another_sessions_ref(server, sid):
    """Also seen: session.get_all listed every session's ref (each a bearer token) to any
    session, and a task's record named the session that made it."""
    x = xmlrpc.client.ServerProxy(server.url)
    other = x.session.login_with_password("root", server.password)["Value"]
    task = x.task.create(other, "theirs", "")["Value"]
    for listing in (x.session.get_all(sid)["Value"],
                    list(x.session.get_all_records(sid)["Value"]),
                    list(x.session.get_all_records_where(sid, "true")["Value"])):
        assert listing == [sid]
    uuid = x.session.get_uuid(other, other)["Value"]
    assert x.session.get_by_uuid(sid, uuid)["ErrorDescription"][0] == "UUID_INVALID"
    everything = getattr(x, "event.from")(sid, ["*"], "", 0.0)["Value"]
    assert other not in json.dumps(everything, default=str)
    assert other not in json.dumps(x.task.get_record(sid, task)["Value"], default=str)
    x.session.logout(other)
