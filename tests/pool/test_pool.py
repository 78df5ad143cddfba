"""Pools (issue 17's acceptance): three agents on loopback -- 127.0.0.1, .2 and .3, one port,
as a pool's hosts share their port -- on one PostgreSQL database (a throw-away cluster, Unix
socket), joined with pool.join through the official SDK; HOST_IS_SLAVE, a VM started on
host 3 from the master, its export and console through the master's URL (302s), an event
made on host 3 seen by the master, bad joins refused, the master killed and replaced, an
ejected host back on its own database. The tests run in order on one pool."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import threading
import time
import xmlrpc.client
from pathlib import Path

import pytest
import XenAPI

from tests.pool.agents import ADDRESSES, Pool, free_port
from tests.server import PASSWORD
from tests.waiting import until
from tests.xe.conftest import run_xe, xe_env

pytestmark = pytest.mark.usefixtures("pool")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool(postgres, tmp_path_factory):
    p = Pool(tmp_path_factory.mktemp("pool"), postgres.new_database())
    p.cluster = postgres
    try:
        for srv in p.hosts:
            srv.start()
        yield p
    finally:
        for srv in p.hosts:
            srv.stop()


@contextlib.contextmanager
def _fake_master(join_info):
    """An HTTP server on loopback: with `join_info` None, no XenAPI at all (501 pages);
    else JSON-RPC that lets anyone log in and answers pool.join_info with `join_info`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if join_info is None:
                self.send_error(501)
                return
            call = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            result = join_info if call["method"] == "pool.join_info" else "OpaqueRef:s"
            body = json.dumps({"jsonrpc": "2.0", "result": result, "id": call["id"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass
    server = http.server.ThreadingHTTPServer((ADDRESSES[0], 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _failure(call) -> list[str]:
    with pytest.raises(XenAPI.Failure) as e:
        call()
    return e.value.details


def _hosts(x) -> dict[str, str]:
    return {x.host.get_address(h): h for h in x.host.get_all()}


def _demo_of(x, host: str) -> str:
    """The demo VM whose disk is on `host`'s local storage."""
    for vm, rec in x.VM.get_all_records().items():
        if rec["name_label"] != "demo" or rec["is_a_template"]:
            continue
        vdi = x.VBD.get_VDI(rec["VBDs"][0])
        sr = x.VDI.get_SR(vdi)
        if {x.PBD.get_host(p) for p in x.SR.get_PBDs(sr)} == {host}:
            return vm
    raise AssertionError(f"no demo VM on {host}")


def test_bad_joins_are_refused_and_change_nothing(pool):
    one, two, three = (pool.login(0), pool.login(1, "two-2"), pool.login(2, "three-3"))
    try:
        x2 = two.xenapi
        # a wrong password for the master
        assert _failure(lambda: x2.pool.join(ADDRESSES[0], "root", "wrong"))[0] == \
            "SESSION_AUTHENTICATION_FAILED"
        # a master nobody answers at (a free port on another loopback address)
        err = _failure(lambda: x2.pool.join(f"127.0.0.9:{free_port()}", "root", PASSWORD))
        assert err[0] == "POOL_JOINING_HOST_CONNECTION_FAILED"
        # an HTTP server that is no agent; one that logs in but answers a join_info with
        # nothing a pool has: refused before anything is written
        with _fake_master(None) as port:
            err = _failure(lambda: x2.pool.join(f"127.0.0.1:{port}", "root", PASSWORD))
        assert err[0] == "POOL_JOINING_HOST_CONNECTION_FAILED"
        with _fake_master({"database": "sqlite", "secret": "s", "master": "m", "pool": "p",
                           "password_hash": "{}"}) as port:
            err = _failure(lambda: x2.pool.join(f"127.0.0.1:{port}", "root", PASSWORD))
        assert err[0] == "POOL_JOINING_HOST_SERVICE_FAILED"
        # a master that keeps its records in its own SQLite file cannot take hosts
        err = _failure(lambda: three.xenapi.pool.join(ADDRESSES[1], "root", "two-2"))
        assert err[0] == "OPERATION_NOT_ALLOWED" and "SQLite" in err[1]
        # a host with a running VM
        demo = x2.VM.get_by_name_label("demo")[0]
        x2.VM.start(demo, False, False)
        assert _failure(lambda: x2.pool.join(ADDRESSES[0], "root", PASSWORD)) == \
            ["JOINING_HOST_CANNOT_HAVE_RUNNING_VMS"]
        x2.VM.hard_shutdown(demo)
        # nothing happened: each host is still alone, with its own database
        assert len(one.xenapi.host.get_all()) == 1 and len(x2.host.get_all()) == 1
        assert not (pool.hosts[1].data_dir / "pool.json").exists()
    finally:
        for s in (one, two, three):
            s.xenapi.session.logout()


def _shared_sr(x, host: str, path: Path, name: str) -> str:
    return x.SR.create(host, {"path": str(path)}, "0", name, "a directory every host sees",
                       "file", "user", True, {})


def _xe(pool, i: int, password: str, *args: str, home: Path) -> subprocess.CompletedProcess:
    return run_xe("-s", ADDRESSES[i], "-p", str(pool.port), "--nossl", "-u", "root",
                  "-pw", password, *args, env=xe_env(home))


def test_two_hosts_join_the_pool(pool, tmp_path):
    # a shared SR made before the joins: each joining host attaches it too
    x1 = pool.login(0).xenapi
    pool.shared_sr = _shared_sr(x1, x1.host.get_all()[0], tmp_path / "nfs", "shared before")
    # host 2 with the SDK, host 3 with xe
    pool.login(1, "two-2").xenapi.pool.join(ADDRESSES[0], "root", PASSWORD)
    r = _xe(pool, 2, "three-3", "pool-join", f"master-address={ADDRESSES[0]}",
            "master-username=root", f"master-password={PASSWORD}", home=tmp_path)
    assert r.returncode == 0, r.stderr
    for i in (1, 2):
        pool.hosts[i].wait_ready()          # the agent started again, on the pool's database
        assert json.loads((pool.hosts[i].data_dir / "pool.json").read_text()) == \
            {"database": pool.database, "state": "member"}
    x = pool.login(0).xenapi
    hosts = _hosts(x)
    assert sorted(hosts) == sorted(ADDRESSES)
    master = x.pool.get_master(x.pool.get_all()[0])
    assert master == hosts[ADDRESSES[0]] and len(x.pool.get_all()) == 1
    # each host's own records came along: its control domain, local SR, PIFs and demo VM
    for addr, host in hosts.items():
        rec = x.host.get_record(host)
        assert x.VM.get_is_control_domain(rec["control_domain"])
        assert x.VM.get_resident_on(rec["control_domain"]) == host
        assert rec["PBDs"] and x.host_metrics.get_live(rec["metrics"])
        _demo_of(x, host)
    # the shared SRs are attached on every host: the one made before the joins and one after
    after = _shared_sr(x, master, tmp_path / "nfs2", "shared after")
    for sr in (pool.shared_sr, after):
        assert {x.PBD.get_host(p) for p in x.SR.get_PBDs(sr)} == set(hosts.values())
    # the pool's default templates once, not three times
    names = [r["name_label"] for r in x.VM.get_all_records().values() if r["is_a_template"]]
    assert names.count("Debian Etch 4.0") == 1


def test_a_slave_answers_host_is_slave_and_the_sdk_goes_to_the_master(pool, tmp_path):
    # xe follows it itself
    r = _xe(pool, 1, PASSWORD, "host-list", "params=address", "--minimal", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.strip().split(",")) == sorted(ADDRESSES)
    for i in (1, 2):
        # the pool's root password is the master's now, on every host
        err = _failure(lambda: pool.login(i))
        assert err == ["HOST_IS_SLAVE", ADDRESSES[0]]
        s = XenAPI.Session(f"http://{err[1]}:{pool.port}")     # as clients follow it
        s.xenapi.login_with_password("root", PASSWORD, "2.21", "tests")
        assert len(s.xenapi.host.get_all()) == 3
        s.xenapi.session.logout()


def test_xen_orchestra_s_client_pointed_at_a_slave_goes_to_the_master(pool):
    xo = ROOT / "tests" / "clients" / "xo"
    if not (xo / "node_modules" / "xen-api").is_dir() or shutil.which("node") is None:
        pytest.fail("Xen Orchestra's client is not installed: run `make test`")
    x = pool.login(0).xenapi
    demo3 = _demo_of(x, _hosts(x)[ADDRESSES[2]])
    p = subprocess.run(["node", str(xo / "xo_pool.mjs"), pool.url(1), PASSWORD, demo3],
                       capture_output=True, text=True, timeout=120, cwd=xo)
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert "error" not in facts, facts["error"]
    assert facts["status"] == "connected" and facts["connected_to"] == ADDRESSES[0]
    assert facts["hosts"] == sorted(ADDRESSES) and facts["master"] == ADDRESSES[0]
    assert facts["export_bytes"] > 0
    # the export's task, made on the master, was ended by host 3's agent (none left pending)
    until(lambda: not [t for t in x.task.get_all_records().values()
                       if t["name_label"].startswith("Xapi#getResource")
                       and t["status"] == "pending"], timeout=10, what="the task to end")


def test_a_vm_started_on_host_3_from_the_master_runs_there(pool):
    x = pool.login(0).xenapi
    host3 = _hosts(x)[ADDRESSES[2]]
    vm = _demo_of(x, host3)
    x.VM.start_on(vm, host3, False, False)
    # the master's answer already shows what host 3's agent did
    assert x.VM.get_power_state(vm) == "Running"
    assert x.VM.get_resident_on(vm) == host3
    # its console is host 3's
    consoles = x.VM.get_consoles(vm)
    assert consoles and all(x.console.get_location(c).startswith(pool.url(2))
                            for c in consoles)
    host1 = _hosts(x)[ADDRESSES[0]]
    x.VM.hard_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    x.VM.start(vm, False, False)                    # placed where its disk is
    assert x.VM.get_resident_on(vm) == host3 != host1


def test_disk_work_on_host_3s_local_storage_runs_on_host_3(pool):
    """Through the master: its agent forwards what touches host 3's files to host 3's."""
    x = pool.login(0).xenapi
    host3 = _hosts(x)[ADDRESSES[2]]
    local3 = next(sr for sr in x.SR.get_all() if not x.SR.get_shared(sr) and
                  {x.PBD.get_host(p) for p in x.SR.get_PBDs(sr)} == {host3})
    vdi = x.VDI.create({"SR": local3, "virtual_size": str(8 << 20), "type": "user",
                        "name_label": "on host 3", "sharable": False, "read_only": False,
                        "other_config": {}})
    path = pool.hosts[2].data_dir / "sr" / x.SR.get_uuid(local3)
    location = x.VDI.get_location(vdi)
    assert [f for f in path.iterdir() if f.name.startswith(location)]
    x.VDI.destroy(vdi)
    assert not [f for f in path.iterdir() if f.name.startswith(location)]
    demo = _demo_of(x, host3)
    if x.VM.get_power_state(demo) == "Running":
        x.VM.hard_shutdown(demo)
    clone = x.VM.clone(demo, "a clone on host 3")
    disk = x.VBD.get_VDI(x.VM.get_VBDs(clone)[0])
    assert x.VDI.get_SR(disk) == local3
    x.SR.scan(local3)
    assert disk in x.SR.get_VDIs(local3)
    x.VM.destroy(clone)
    x.VDI.destroy(disk)


def test_devices_of_a_vm_on_host_3_plug_there(pool):
    """VBD and VIF plug/unplug through the master run on host 3's agent, whose domain it is."""
    x = pool.login(0).xenapi
    host3 = _hosts(x)[ADDRESSES[2]]
    vm = _demo_of(x, host3)
    if x.VM.get_power_state(vm) != "Running":
        x.VM.start(vm, False, False)
    local3 = x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]))
    vdi = x.VDI.create({"SR": local3, "virtual_size": str(4 << 20), "type": "user",
                        "name_label": "hot disk", "sharable": False, "read_only": False,
                        "other_config": {}})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "5", "bootable": False,
                        "mode": "RW", "type": "Disk", "empty": False, "other_config": {}})
    net = x.VIF.get_network(x.VM.get_VIFs(vm)[0])
    vif = x.VIF.create({"VM": vm, "network": net, "device": "5", "MAC": "", "MTU": "1500",
                        "other_config": {}})
    x.VBD.plug(vbd)
    x.VIF.plug(vif)
    assert x.VBD.get_currently_attached(vbd) and x.VIF.get_currently_attached(vif)
    x.VBD.unplug(vbd)
    x.VIF.unplug(vif)
    assert not x.VBD.get_currently_attached(vbd) and not x.VIF.get_currently_attached(vif)
    x.VBD.destroy(vbd)
    x.VIF.destroy(vif)
    x.VDI.destroy(vdi)
    x.VM.hard_shutdown(vm)


def _shared_vm(x, pool, name: str) -> str:
    """A VM whose one disk is on the shared SR (any host may run it)."""
    vdi = x.VDI.create({"SR": pool.shared_sr, "virtual_size": str(16 << 20), "type": "user",
                        "name_label": "shared disk", "sharable": False, "read_only": False,
                        "other_config": {}})
    vm = x.VM.create({"name_label": name, "memory_static_max": str(2**28),
                      "memory_dynamic_max": str(2**28), "memory_dynamic_min": str(2**28),
                      "memory_static_min": str(2**28), "VCPUs_max": "1",
                      "VCPUs_at_startup": "1"})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {}})
    return vm


def test_a_vm_on_a_shared_sr_starts_on_any_host(pool):
    x = pool.login(0).xenapi
    hosts = _hosts(x)
    vm = _shared_vm(x, pool, "on shared storage")
    for addr in (ADDRESSES[1], ADDRESSES[2], ADDRESSES[0]):
        x.VM.start_on(vm, hosts[addr], False, False)
        assert x.VM.get_resident_on(vm) == hosts[addr]
        x.VM.hard_shutdown(vm)
    # with nothing pinning it, VM.start runs it on the master
    x.VM.start(vm, False, False)
    assert x.VM.get_resident_on(vm) == hosts[ADDRESSES[0]]
    x.VM.hard_shutdown(vm)


def test_a_call_handed_to_a_host_reads_what_was_committed_before_it(pool):
    """A VM halted through host 2, then started on host 3 while host 3's follower is held
    back (its PostgreSQL backend stopped for 2 s): host 3 waits for the halt to reach its
    cache before it runs the start (it answered VM_BAD_POWER_STATE halted/running from a
    cache one change behind -- the race a CI run once lost)."""
    import psycopg
    x = pool.login(0).xenapi
    hosts = _hosts(x)
    vm = _shared_vm(x, pool, "handed over")
    x.VM.start_on(vm, hosts[ADDRESSES[1]], False, False)
    host3 = hosts[ADDRESSES[2]]
    secret = (pool.hosts[2].data_dir / "pool.secret").read_text().strip()
    agent3 = xmlrpc.client.ServerProxy(pool.url(2))
    pool_session = agent3.session.slave_login(host3, secret)["Value"]
    # host 3's cache holds the start (what its answer without the wait would have used)
    assert agent3.VM.get_power_state(pool_session, vm)["Value"] == "Running"
    with psycopg.connect(pool.database, autocommit=True) as db:
        (backend,), = db.execute("SELECT pid FROM pg_stat_activity WHERE application_name = "
                                 "%s", (f"xcp-httpd follower {pool.hosts[2].proc.pid}",))
    os.kill(backend, signal.SIGSTOP)
    resume = threading.Timer(2.0, os.kill, (backend, signal.SIGCONT))
    resume.start()
    try:
        x.VM.hard_shutdown(vm)
        x.VM.start_on(vm, host3, False, False)
    finally:
        resume.cancel()
        os.kill(backend, signal.SIGCONT)
    assert x.VM.get_resident_on(vm) == host3
    x.VM.hard_shutdown(vm)


def test_event_from_on_the_master_sees_a_change_made_on_host_3(pool):
    """host 3's agent writes (in a pool session, as the internal RPC does); the master's
    event.from, waiting, returns with it."""
    x = pool.login(0).xenapi
    host3 = _hosts(x)[ADDRESSES[2]]
    vm = _demo_of(x, host3)
    token = x.event_from(["vm"], "", 0.0)["token"]
    secret = (pool.hosts[2].data_dir / "pool.secret").read_text().strip()
    agent3 = xmlrpc.client.ServerProxy(pool.url(2))
    pool_session = agent3.session.slave_login(host3, secret)["Value"]
    got: dict = {}

    def wait() -> None:
        nonlocal token
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            reply = x.event_from(["vm"], token, 30.0)
            token = reply["token"]
            got["events"] = [e for e in reply["events"] if e["ref"] == vm and
                             e["snapshot"]["name_description"] == "made on host 3"]
            if got["events"]:
                got["at"] = time.monotonic()
                return
    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)                       # the waiter is blocked in event.from
    assert agent3.VM.set_name_description(pool_session, vm, "made on host 3")["Status"] == \
        "Success"
    done = time.monotonic()
    waiter.join(35)
    assert got["events"]
    print(f"event on the master {1000 * (got['at'] - done):.1f} ms after host 3's answer")
    # a wrong pool secret is no login
    assert agent3.session.slave_login(host3, "guess")["ErrorDescription"][0] == \
        "SESSION_AUTHENTICATION_FAILED"
    # and a call in a root session on host 3 itself: HOST_IS_SLAVE
    root3 = agent3.session.slave_login(host3, secret)["Value"]
    assert agent3.session.logout(root3)["Status"] == "Success"


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-f", *args], capture_output=True, check=True)


def test_export_and_console_through_the_master_are_redirected_to_host_3(pool, tmp_path):
    s = pool.login(0)
    x = s.xenapi
    host3 = _hosts(x)[ADDRESSES[2]]
    vm = _demo_of(x, host3)
    sid = s._session
    uuid = x.VM.get_uuid(vm)
    if x.VM.get_power_state(vm) != "Running":
        x.VM.start(vm, False, False)
    # a console CONNECT to the master: 302 to host 3, which tunnels to the VM's console
    with socket.create_connection((ADDRESSES[0], pool.port)) as c:
        c.sendall(f"CONNECT /console?uuid={uuid}&session_id={sid} HTTP/1.0\r\n\r\n".encode())
        head = c.recv(4096).decode()
    assert head.startswith("HTTP/1.1 302") and f"Location: {pool.url(2)}/console?" in head
    location = next(ln.split(": ", 1)[1] for ln in head.split("\r\n")
                    if ln.startswith("Location: "))
    with socket.create_connection((ADDRESSES[2], pool.port)) as c:
        c.sendall(f"CONNECT {location[len(pool.url(2)):]} HTTP/1.0\r\n\r\n".encode())
        head = c.recv(4096)
        while b"\r\n\r\n" not in head:
            head += c.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
        rest = head.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 12:
            rest += c.recv(4096)
        assert rest.startswith(b"RFB 003.")              # the guest's VNC server speaks
    # the export of a halted VM whose disk is on host 3: through the master's URL
    x.VM.hard_shutdown(vm)
    url = f"{pool.url(0)}/export?session_id={sid}&uuid={uuid}"
    head = _curl("-o", "/dev/null", "-D", "-", url).stdout.decode()
    assert head.startswith("HTTP/1.1 302") and f"Location: {pool.url(2)}/export?" in head
    out = tmp_path / "demo.xva"
    _curl("-L", "-o", str(out), url)
    with tarfile.open(out) as t:
        assert t.getnames()[0] == "ova.xml"
    # its disk, raw, through the master (curl follows the 302)
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    raw = tmp_path / "disk.raw"
    _curl("-L", "-o", str(raw),
          f"{pool.url(0)}/export_raw_vdi?session_id={sid}&vdi={x.VDI.get_uuid(disk)}"
          "&format=raw")
    assert raw.stat().st_size == int(x.VDI.get_virtual_size(disk))
    # an import into host 3's local SR through the master lands there (curl -L -T resends)
    local3 = x.VDI.get_SR(disk)
    before = set(x.VM.get_all())
    _curl("-L", "-T", str(out), f"{pool.url(0)}/import?session_id={sid}"
          f"&sr_uuid={x.SR.get_uuid(local3)}")
    (new,) = set(x.VM.get_all()) - before
    assert x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(new)[0])) == local3
    x.VM.destroy(new)
    # a task made on the master and named at once in a request to host 3 (what xe does after
    # the master's 302): host 3 reads the database's newest changes before refusing it
    # (and a statistics request, whose task the request's end completes: XO's polls of members)
    conn = http.client.HTTPConnection(ADDRESSES[2], pool.port, timeout=30)
    for i in range(20):
        task = x.task.create("pool export", "")
        path = "/export_metadata?uuid={uuid}&" if i % 2 else "/host_rrd?"
        conn.request("GET", f"{path.format(uuid=uuid)}session_id={sid}&task_id={task}")
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()[:300]
        resp.read()
        assert until(lambda: x.task.get_status(task) == "success")
        x.task.destroy(task)
    conn.close()
    # xe does the same, following the master's 302s
    home = tmp_path / "home"
    home.mkdir()
    xe_out = tmp_path / "xe.xva"
    r = _xe(pool, 0, PASSWORD, "vm-export", f"uuid={uuid}", f"filename={xe_out}", home=home)
    assert r.returncode == 0, r.stderr
    with tarfile.open(xe_out) as t:
        assert t.getnames()[0] == "ova.xml"
    r = _xe(pool, 0, PASSWORD, "vm-import", f"filename={xe_out}",
            f"sr-uuid={x.SR.get_uuid(local3)}", home=home)
    assert r.returncode == 0, r.stderr
    imported = x.VM.get_by_uuid(r.stdout.strip())
    assert x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(imported)[0])) == local3
    x.VM.destroy(imported)
    # /vm_rrd goes where the VM runs
    x.VM.start(vm, False, False)
    head = _curl("-o", "/dev/null", "-D", "-",
                 f"{pool.url(0)}/vm_rrd?session_id={sid}&uuid={uuid}").stdout.decode()
    assert head.startswith("HTTP/1.1 302") and f"Location: {pool.url(2)}/vm_rrd?" in head
    x.VM.hard_shutdown(vm)


def test_the_master_cannot_be_ejected_nor_join_another_pool(pool):
    x = pool.login(0).xenapi
    host1 = _hosts(x)[ADDRESSES[0]]
    err = _failure(lambda: x.pool.eject(host1))
    assert err[0] == "OPERATION_NOT_ALLOWED" and "master" in err[1]
    assert _failure(lambda: x.pool.join(ADDRESSES[1], "root", PASSWORD)) == \
        ["JOINING_HOST_CANNOT_BE_MASTER_OF_OTHER_HOSTS"]
    assert len(x.host.get_all()) == 3


def test_the_master_hands_over_and_back(pool, tmp_path):
    x = pool.login(0).xenapi
    hosts = _hosts(x)
    x.pool.designate_new_master(hosts[ADDRESSES[1]])
    assert _failure(lambda: pool.login(0)) == ["HOST_IS_SLAVE", ADDRESSES[1]]
    y = pool.login(1).xenapi
    assert y.pool.get_master(y.pool.get_all()[0]) == hosts[ADDRESSES[1]]
    # a slave cannot take over from a live master (the master's lease is held)
    r = _xe(pool, 2, PASSWORD, "pool-emergency-transition-to-master", home=tmp_path)
    assert r.returncode != 0 and "OPERATION_NOT_ALLOWED" in r.stderr, r.stderr
    y.pool.designate_new_master(hosts[ADDRESSES[0]])
    x = pool.login(0).xenapi
    assert x.pool.get_master(x.pool.get_all()[0]) == hosts[ADDRESSES[0]]


def test_root_s_password_is_the_pool_s(pool):
    """Changed on the master, it is the one every host checks (here: host 2's own logins)."""
    x = pool.login(0).xenapi
    x.session.change_password(PASSWORD, "pool-pw-2")
    agent2 = xmlrpc.client.ServerProxy(pool.url(1))

    def login2(password: str) -> list:
        reply = agent2.session.slave_local_login_with_password("root", password)
        return ["Success"] if reply["Status"] == "Success" else reply["ErrorDescription"]
    assert until(lambda: login2("pool-pw-2") == ["Success"], timeout=10, what="the new one")
    assert login2(PASSWORD)[0] == "SESSION_AUTHENTICATION_FAILED"
    x.session.change_password("pool-pw-2", PASSWORD)
    assert until(lambda: login2(PASSWORD) == ["Success"], timeout=10, what="the old one")


def test_kill_9_of_the_master_and_another_host_takes_over(pool):
    x = pool.login(0).xenapi
    hosts = _hosts(x)
    template = x.VM.get_by_name_label("Debian Etch 4.0")[0]
    made = [x.VM.clone(template, f"before the kill {i}") for i in range(3)]
    x.VM.set_is_a_template(made[1], False)
    x.VM.start(made[1], False, False)              # no disk: it runs on the master
    assert x.VM.get_resident_on(made[1]) == hosts[ADDRESSES[0]]
    token = x.event_from(["vm"], "", 0.0)["token"]
    pool.hosts[0].kill9()

    def new_master():
        for i in (1, 2):
            try:
                return i, pool.login(i)
            except XenAPI.Failure as e:
                assert e.details[0] == "HOST_IS_SLAVE"
        return None
    # the others take the lease within seconds (they try every second): 15 s is the bound
    i, s = until(new_master, timeout=15, what="a new master", step=0.25)
    y = s.xenapi
    assert y.pool.get_master(y.pool.get_all()[0]) == hosts[ADDRESSES[i]]
    # the other slave names it
    other = 3 - i
    assert _failure(lambda: pool.login(other)) == ["HOST_IS_SLAVE", ADDRESSES[i]]
    # every change acknowledged before the kill is there
    assert [y.VM.get_name_label(vm) for vm in made] == \
        [f"before the kill {n}" for n in range(3)]
    # the old master's event token is good on the new one: the next change comes after it
    y.VM.set_name_label(made[0], "after the kill")
    events = y.event_from(["vm"], token, 5.0)["events"]
    assert [e for e in events if e["ref"] == made[0] and
            e["snapshot"]["name_label"] == "after the kill"]
    # the dead master stops beating: marked not live
    metrics = y.host.get_metrics(hosts[ADDRESSES[0]])
    until(lambda: not y.host_metrics.get_live(metrics), timeout=30, what="host 1 not live")
    # and the VM it ran is Halted, with a message saying why
    assert y.VM.get_power_state(made[1]) == "Halted"
    assert y.VM.get_resident_on(made[1]) == "OpaqueRef:NULL"
    host1_uuid = y.host.get_uuid(hosts[ADDRESSES[0]])
    assert [m for m in y.message.get_all_records().values()
            if m["name"] == "HOST_OFFLINE" and m["obj_uuid"] == host1_uuid]
    pool.new_master = i


def test_a_host_is_ejected_and_is_alone_again(pool):
    i = pool.new_master
    other = 3 - i
    x = pool.login(i).xenapi
    hosts = _hosts(x)
    gone = hosts[ADDRESSES[other]]
    demo = _demo_of(x, gone)
    x.pool.eject(gone)                     # run by its own agent, which starts again
    pool.hosts[other].wait_ready()
    assert gone not in x.host.get_all()
    assert demo not in x.VM.get_all()
    # alone, on its own SQLite file, with its local SR and its demo VM; the pool's password
    assert not (pool.hosts[other].data_dir / "pool.json").exists()
    y = pool.login(other).xenapi
    assert y.host.get_all() == [gone]
    assert y.pool.get_master(y.pool.get_all()[0]) == gone
    assert y.VM.get_name_label(demo) == "demo"
    y.VM.start(demo, False, False)
    assert y.VM.get_power_state(demo) == "Running"
    y.VM.hard_shutdown(demo)
    assert y.VM.get_by_name_label("Debian Etch 4.0")


def test_a_master_that_loses_its_database_connection_stops_being_master(pool):
    """The lease's connection cut (the server ends it): the master says so at its next check
    and answers HOST_IS_SLAVE until it holds the lease again (here it takes it back: the
    pool's only other host is dead)."""
    i = pool.new_master
    srv = pool.hosts[i]
    srv.drain_output(0.5)         # what it logged before (a handover says the same words)
    cut = pool.cluster.sql(
        "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_stat_activity a "
        "USING (pid) WHERE l.locktype = 'advisory' AND l.granted AND "
        "a.application_name = 'xcp-httpd pool lease' AND a.datname = "
        f"'{pool.database.split('?')[0].rsplit('/', 1)[1]}'")
    assert cut == "1"
    seen = until(lambda: "no longer the pool master" in srv.drain_output(0.5) or None,
                 timeout=15, what="the master to give the lease up")
    assert seen
    master = until(lambda: _master_seen_on(pool, i), timeout=15, what="a master again")
    assert master == ADDRESSES[i], srv.drain_output(0.5)


def _master_seen_on(pool, i: int) -> str | None:
    """The pool master's address as host i answers it, None while it says HOST_IS_SLAVE."""
    try:
        x = pool.login(i).xenapi
        return x.host.get_address(x.pool.get_master(x.pool.get_all()[0]))
    except XenAPI.Failure as e:
        assert e.details[0] == "HOST_IS_SLAVE"
        return None
