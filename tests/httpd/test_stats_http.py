"""Statistics over HTTP and XenAPI against the real server (issue 5 acceptance, httpd side):
wget and curl with Basic auth, lxml/json parsing, Xen Orchestra's and XenCenter's requests,
`rrdtool restore` of /host_rrd and /vm_rrd, values against /proc and the simulated domain,
status codes for bad input, legacy metrics, restart keeping history, VM halt/destroy files.

One server for the module, collecting every second (the RRD step stays 5 s)."""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.error
import urllib.request

import pytest
import XenAPI
from lxml import etree

from tests.server import Server
from tests.waiting import until



def _url(srv, path, auth=True):
    base = srv.url.replace("http://", f"http://root:{srv.password}@") if auth else srv.url
    return base + path


def _curl(srv, path, *extra):
    p = subprocess.run(["curl", "-sS", "-f", *extra, _url(srv, path)], capture_output=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _wget(srv, path):
    p = subprocess.run(["wget", "-q", "-O", "-", "--user", "root", "--password", srv.password,
                        "--auth-no-challenge", srv.url + path], capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def _status(srv, path, auth=True):
    req = urllib.request.Request(srv.url + path)
    if auth:
        import base64
        token = base64.b64encode(f"root:{srv.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _wait(pred, timeout=30.0, what="condition"):
    return until(pred, timeout, what, step=0.5)


def _updates(srv, query):
    doc = etree.fromstring(_curl(srv, "/rrd_updates?" + query))
    legend = [e.text for e in doc.find("meta/legend")]
    rows = [(int(r.findtext("t")), [float(v.text) for v in r.findall("v")])
            for r in doc.find("data")]
    return doc, legend, rows


def _latest(srv, query, entry):
    """Newest known value of a legend entry over the last two minutes."""
    _, legend, rows = _updates(srv, query)
    if entry not in legend:
        return None
    i = legend.index(entry)
    for _, vals in rows:
        if not math.isnan(vals[i]):
            return vals[i]
    return None


@pytest.fixture(scope="module")
def stats_server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("stats"), "--stats-interval", "1",
                 "--stats-save-interval", "3").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def env(stats_server):
    """A running VM (the demo VM: a provisioned disk and a VIF) and the host's uuids."""
    x = stats_server.session().xenapi
    vm = x.VM.get_by_name_label("demo")[0]
    x.VM.start(vm, False, False)
    host = x.host.get_all()[0]
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    info = {"x": x, "vm": vm, "vm_uuid": x.VM.get_uuid(vm), "host": host,
            "host_uuid": x.host.get_uuid(host), "sr": sr, "sr_uuid": x.SR.get_uuid(sr)}
    q = "host=true&start=-120"
    _wait(lambda: _latest(stats_server, q, f"AVERAGE:vm:{info['vm_uuid']}:vbd_xvda_read"),
          40, "the VM's first rates")
    return info


# --- every endpoint through wget and curl -----------------------------------------------------

def test_every_endpoint_with_wget_and_curl(stats_server, env):
    start = int(time.time()) - 300
    vm, sr = env["vm_uuid"], env["sr_uuid"]
    for path in (f"/rrd_updates?start={start}&host=true", f"/host_rrd", f"/vm_rrd?uuid={vm}",
                 f"/sr_rrd?uuid={sr}", "/host_rrds", f"/vm_rrds?uuid={vm}",
                 f"/rrd_updates?start={start}&sr_uuid={sr}&vm_uuid={vm}"):
        for fetch in (_curl, _wget):
            root = etree.fromstring(fetch(stats_server, path))
            assert root.tag in ("xport", "rrd")
        sep = "&" if "?" in path else "?"
        data = json.loads(_curl(stats_server, path + sep + "json=true"))
        assert "meta" in data or "rra" in data
        data = json.loads(_curl(stats_server, path, "-H", "Accept: application/json"))
        assert "meta" in data or "rra" in data


def test_headers_and_streaming(stats_server, env):
    status, headers, body = _status(stats_server, f"/rrd_updates?start={int(time.time()) - 60}"
                                    "&host=true")
    assert status == 200
    assert headers["Content-Type"].startswith("text/xml")
    assert headers["Cache-Control"] == "no-cache, no-store"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers.get("Transfer-Encoding") == "chunked"
    status, headers, _ = _status(stats_server, "/host_rrd?json=1")
    assert status == 200 and headers["Content-Type"].startswith("application/json")


def test_rrd_updates_layout(stats_server, env):
    now = int(time.time())
    doc, legend, rows = _updates(stats_server, f"start={now - 60}&host=true")
    meta = doc.find("meta")
    assert [c.tag for c in meta] == ["start", "step", "end", "rows", "columns", "legend"]
    assert int(meta.findtext("step")) == 5 and int(meta.findtext("columns")) == len(legend)
    assert int(meta.findtext("rows")) == len(rows) >= 10
    times = [t for t, _ in rows]
    assert times == sorted(times, reverse=True) and times[0] == int(meta.findtext("end"))
    assert all(t >= now - 60 for t in times) and all(b - a == -5 for a, b in zip(times, times[1:]))
    host = f"host:{env['host_uuid']}:"
    assert legend[0].startswith("AVERAGE:" + host)
    names = {e.split(":", 3)[3] for e in legend if host in e}
    assert {"cpu0", "cpu_avg", "loadavg", "memory_total_kib", "memory_free_kib", "pif_aggr_rx",
            "pif_aggr_tx", "xapi_memory_usage_kib", "xapi_open_fds", "pool_session_count",
            "pool_task_count"} <= names
    vm = f"vm:{env['vm_uuid']}:"
    vm_names = {e.split(":", 3)[3] for e in legend if vm in e}
    assert {"cpu0", "memory", "memory_target", "memory_internal_free", "vif_0_rx", "vif_0_tx",
            "vbd_xvda_read", "vbd_xvda_write"} <= vm_names
    kinds = [e.split(":")[1] for e in legend]
    assert kinds == sorted(kinds, key=["host", "vm", "sr"].index)       # host, then VMs
    # only the VM asked for (sr_uuid=none: no SR either, as xapi); with cf: only that CF
    _, legend, _ = _updates(stats_server, f"start={now - 60}&vm_uuid={env['vm_uuid']}&cf=AVERAGE"
                                          "&sr_uuid=none")
    assert legend and all(e.startswith(f"AVERAGE:{vm}") for e in legend)
    # a coarser level with every CF of the host
    _, legend, _ = _updates(stats_server, f"start={now - 3600}&host=true&interval=3600")
    assert {e.split(":")[0] for e in legend} == {"AVERAGE", "MIN", "MAX"}


def test_xen_orchestra_request(stats_server, env):
    for interval in (5, 60, 3600, 86400):
        data = json.loads(_curl(stats_server, f"/rrd_updates?cf=AVERAGE&host=true&interval="
                                f"{interval}&json=true&start={int(time.time()) - 2 * interval}"))
        assert int(data["meta"]["step"]) == interval
        assert all(isinstance(v, str) for row in data["data"] for v in row["values"])
        assert data["meta"]["legend"] and len(data["meta"]["legend"]) == \
            int(data["meta"]["columns"])


def test_xencenter_request(stats_server, env):
    # start well inside the 5 s archive's 10 minutes: at exactly 600 s back, a sample taken
    # between this line and the server's answer makes the 5 s archive too short for it, and
    # the server rightly answers from the minute archive (seen once under load)
    for interval in (5, 60, 3600, 86400):
        doc = etree.fromstring(_curl(stats_server, f"/rrd_updates?start={int(time.time()) - 300}"
                                     f"&interval={interval}&cf=AVERAGE&host=true"))
        assert int(doc.findtext("meta/step")) == interval
    doc = etree.fromstring(_curl(stats_server, f"/vm_rrds?uuid={env['vm_uuid']}"))
    int(doc.findtext("lastupdate"))                                   # parsed as a long


# --- values -------------------------------------------------------------------------------------

def test_host_values_match_proc(stats_server, env):
    q = "host=true&start=-120&cf=AVERAGE"
    h = f"AVERAGE:host:{env['host_uuid']}:"
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    total = int(meminfo["MemTotal"].split()[0])
    assert _latest(stats_server, q, h + "memory_total_kib") == total
    free = _latest(stats_server, q, h + "memory_free_kib")
    assert 0 < free <= total
    for name in ("cpu0", "cpu_avg"):
        assert 0.0 <= _latest(stats_server, q, h + name) <= 1.0
    load = float(open("/proc/loadavg").read().split()[0])
    assert abs(_latest(stats_server, q, h + "loadavg") - load) < 3.0
    assert _latest(stats_server, q, h + "xapi_memory_usage_kib") > 10_000
    assert _latest(stats_server, q, h + "xapi_open_fds") >= 5
    # an AVERAGE row: the one that spans the first session's login averages 0s and 1s
    assert _latest(stats_server, q, h + "pool_session_count") > 0


def test_vm_values_follow_the_simulated_domain(stats_server, env):
    x, vm = env["x"], env["vm"]
    q = f"vm_uuid={env['vm_uuid']}&start=-120"
    v = f"AVERAGE:vm:{env['vm_uuid']}:"
    mem = int(x.VM.get_memory_dynamic_max(vm))
    assert _latest(stats_server, q, v + "memory") == mem
    assert _latest(stats_server, q, v + "memory_target") == mem
    assert _latest(stats_server, q, v + "memory_internal_free") == int(mem * 0.6) // 1024
    assert 0.0 <= _latest(stats_server, q, v + "cpu0") <= 1.0
    # the simulated domain reads 64 KiB from each disk about once a second (fewer when the
    # machine is busy: a rate band would measure the load, so only the ceiling is checked)
    assert 0 < _latest(stats_server, q, v + "vbd_xvda_read") < 2 * 65536
    assert 20 < _latest(stats_server, q, v + "vif_0_rx") < 300
    # the SR's read rate is the sum of its VBDs' in the same row (every VM's disks are on it)
    running = [r["uuid"] for r in x.VM.get_all_records().values()
               if r["power_state"] == "Running" and not r["is_control_domain"]]
    _, legend, rows = _updates(stats_server, f"sr_uuid={env['sr_uuid']}&start=-120&cf=AVERAGE&"
                               + "&".join(f"vm_uuid={u}" for u in running))
    sr_col = legend.index(f"AVERAGE:sr:{env['sr_uuid']}:read")
    vbd_cols = [i for i, e in enumerate(legend) if e.startswith("AVERAGE:vm:")
                and e.split(":")[-1].startswith("vbd_") and e.endswith("_read")]
    both = [vals for _, vals in rows
            if not any(math.isnan(vals[i]) for i in [sr_col, *vbd_cols])]
    assert both and vbd_cols
    # rows of two RRDs split a read differently at their edges: compare the bytes over all
    # rows (rate x 5 s), within two of the guest's 64 KiB reads
    sr_bytes = 5 * sum(vals[sr_col] for vals in both)
    vbd_bytes = 5 * sum(vals[i] for vals in both for i in vbd_cols)
    assert sr_bytes > 0 and abs(sr_bytes - vbd_bytes) <= 2 * 65536, (sr_bytes, vbd_bytes)


# --- rrdtool ----------------------------------------------------------------------------------

def _dump_values(xml: bytes):
    doc = etree.fromstring(xml)
    ds = [d.findtext("name").strip() for d in doc.findall("ds")]
    rras = [(r.findtext("cf").strip(), int(r.findtext("pdp_per_row")),
             [[float(v.text) for v in row.findall("v")] for row in r.find("database").findall("row")])
            for r in doc.findall("rra")]
    return int(doc.findtext("lastupdate")), ds, rras


@pytest.mark.parametrize("which", ["host", "vm"])
def test_rrdtool_restore_accepts_our_dump(stats_server, env, tmp_path, which):
    path = "/host_rrd" if which == "host" else f"/vm_rrd?uuid={env['vm_uuid']}"
    ours = _curl(stats_server, path)
    # rrdtool keeps at most 19 characters of a DS name (DS_NAM_SIZE); xapi's names
    # `xapi_memory_usage_kib` and `memory_internal_free` are longer and clients (Xen Orchestra,
    # XenCenter) look them up by those names, so we serve them unchanged and shorten them here.
    long_names = sorted({n for n in _dump_values(ours)[1] if len(n) > 19})
    assert long_names == (["xapi_memory_usage_kib"] if which == "host"
                          else ["memory_internal_free"])
    fitted = ours
    for n in long_names:
        fitted = fitted.replace(f"<name>{n}</name>".encode(), f"<name>{n[:19]}</name>".encode())
    (tmp_path / "in.xml").write_bytes(fitted)
    subprocess.run(["rrdtool", "restore", str(tmp_path / "in.xml"), str(tmp_path / "r.rrd")],
                   check=True, capture_output=True)
    theirs = subprocess.run(["rrdtool", "dump", str(tmp_path / "r.rrd")], check=True,
                            capture_output=True).stdout
    a, b = _dump_values(fitted), _dump_values(theirs)
    assert a[0] == b[0] and a[1] == b[1] and len(a[2]) == len(b[2])
    known = 0
    for (cf1, p1, rows1), (cf2, p2, rows2) in zip(a[2], b[2]):
        assert (cf1, p1, len(rows1)) == (cf2, p2, len(rows2))
        for r1, r2 in zip(rows1, rows2):
            for v1, v2 in zip(r1, r2):
                assert (math.isnan(v1) and math.isnan(v2)) or v1 == pytest.approx(v2, rel=1e-9)
                known += not math.isnan(v1)
    assert known >= 5


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path,status", [
    ("/rrd_updates", 400), ("/rrd_updates?start=", 400), ("/rrd_updates?start=abc", 400),
    ("/rrd_updates?start=1e400", 400), ("/rrd_updates?start=nan", 400),
    ("/rrd_updates?start=0&interval=x", 400), ("/rrd_updates?start=0&interval=-5", 400),
    ("/rrd_updates?start=0&cf=LAST", 400),
    ("/vm_rrd", 400), ("/vm_rrd?uuid=", 400), ("/vm_rrd?uuid=../../etc/passwd", 400),
    ("/vm_rrd?uuid=00000000-0000-0000-0000-000000000000", 404), ("/vm_rrds", 400),
    ("/sr_rrd?uuid=<x>", 400), ("/sr_rrd?uuid=00000000-0000-0000-0000-000000000000", 404),
    ("/rrd_updates?start=99999999999999&host=true", 200),
    ("/rrd_updates?start=-999999999999&host=true&json", 200),
])
def test_bad_input_is_a_4xx(stats_server, env, path, status):
    got, _, _ = _status(stats_server, path)
    assert got == status


@pytest.mark.parametrize("flag", ["json", "json=true", "json=false"])
def test_json_by_key_presence_as_xapi(stats_server, env, flag):
    doc = json.loads(_curl(stats_server, f"/rrd_updates?start=-60&host=true&{flag}"))
    assert doc["meta"]["legend"]


@pytest.mark.parametrize("query", ["vm_uuid=none&sr_uuid=none", "vm_uuid=zzz&sr_uuid=none",
                                   "vm_uuid=00000000-0000-0000-0000-000000000000&sr_uuid=none"])
def test_vm_and_sr_filters_keep_only_what_they_name(stats_server, env, query):
    """As xapi: `none`, garbage or an unknown uuid filter to no columns (200), which is how Xen
    Orchestra asks for the host alone; without a filter every VM and SR is there."""
    doc, legend, _ = _updates(stats_server, f"start=-60&{query}")
    assert legend == []
    # a relative start is resolved even with nothing selected (a halted VM): to now - 60
    start, end = int(doc.findtext("meta/start")), int(doc.findtext("meta/end"))
    assert end - start == 60 and abs(end - time.time()) < 30, (start, end)
    _, legend, _ = _updates(stats_server, f"start=-60&host=true&{query}")
    assert legend and all(e.split(":")[1] == "host" for e in legend)
    _, legend, _ = _updates(stats_server, "start=-60")
    kinds = {e.split(":")[1] for e in legend}
    assert kinds == {"vm", "sr"}
    _, legend, _ = _updates(stats_server, f"start=-60&sr_uuid=none&vm_uuid={env['vm_uuid']}")
    assert {e.split(":")[2] for e in legend} == {env["vm_uuid"]}


def test_credentials_required(stats_server, env):
    for path in ("/rrd_updates?start=0&host=true", "/host_rrd", f"/vm_rrd?uuid={env['vm_uuid']}"):
        assert _status(stats_server, path, auth=False)[0] == 401
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", "root:wrong",
                        stats_server.url + "/host_rrd"], capture_output=True, text=True)
    assert p.stdout == "401"
    session = stats_server.session()
    ref = session._session
    status, _, _ = _status(stats_server, f"/host_rrd?session_id={ref}", auth=False)
    assert status == 200
    session.xenapi.session.logout()


# --- XenAPI -------------------------------------------------------------------------------------

def test_data_source_messages(stats_server, env):
    x = env["x"]
    sources = x.host.get_data_sources(env["host"])
    by_name = {s["name_label"]: s for s in sources}
    assert set(by_name["cpu_avg"]) == {"name_label", "name_description", "enabled", "standard",
                                       "units", "min", "max", "value"}
    assert by_name["cpu_avg"]["units"] == "(fraction)" and by_name["cpu_avg"]["max"] == 1.0
    assert by_name["memory_total_kib"]["units"] == "KiB"
    total = x.host.query_data_source(env["host"], "memory_total_kib")
    assert total == int(open("/proc/meminfo").readline().split()[1])
    vm_sources = {s["name_label"] for s in x.VM.get_data_sources(env["vm"])}
    assert {"cpu0", "memory", "vbd_xvda_read"} <= vm_sources
    assert x.VM.query_data_source(env["vm"], "memory") == \
        int(x.VM.get_memory_dynamic_max(env["vm"]))
    assert {s["name_label"] for s in x.SR.get_data_sources(env["sr"])} == {"read", "write"}
    with pytest.raises(XenAPI.Failure) as e:
        x.host.query_data_source(env["host"], "no_such_ds")
    assert e.value.details == ["INTERNAL_ERROR", 'Rrd.Invalid_data_source("no_such_ds")']
    with pytest.raises(XenAPI.Failure):
        x.VM.record_data_source(env["vm"], "no_such_ds")
    x.VM.record_data_source(env["vm"], "memory")
    x.host.forget_data_source_archives(env["host"], "loadavg")
    assert math.isnan(x.host.query_data_source(env["host"], "loadavg"))
    h = f"AVERAGE:host:{env['host_uuid']}:loadavg"
    _, legend, rows = _updates(stats_server, "host=true&start=-600")
    assert sum(not math.isnan(r[1][legend.index(h)]) for r in rows) <= 2


def test_legacy_metrics_follow_rrd_update_interval(stats_server, env):
    x = env["x"]
    metrics = x.host.get_metrics(env["host"])
    x.host_metrics.get_memory_total(metrics)
    x.host.add_to_other_config(env["host"], "rrd_update_interval", "1")
    try:
        total = int(open("/proc/meminfo").readline().split()[1]) * 1024
        _wait(lambda: int(x.host_metrics.get_memory_total(metrics)) == total, 15,
              "host_metrics.memory_total")
        vm_metrics = x.VM.get_metrics(env["vm"])
        _wait(lambda: "0" in x.VM_metrics.get_VCPUs_utilisation(vm_metrics), 15,
              "VM_metrics.VCPUs_utilisation")
    finally:
        x.host.remove_from_other_config(env["host"], "rrd_update_interval")


# --- VM lifecycle and restarts ------------------------------------------------------------------

def test_min_max_vm_rrds_follow_the_pool_flag(stats_server, env):
    x = env["x"]
    pool = x.pool.get_all()[0]
    vm = x.VM.create({"name_label": "minmax", "memory_static_max": str(2**28),
                      "memory_dynamic_max": str(2**28), "VCPUs_max": "2",
                      "VCPUs_at_startup": "2"})
    x.pool.add_to_other_config(pool, "create_min_max_in_new_VM_RRDs", "true")
    try:
        x.VM.start(vm, False, False)
        uuid = x.VM.get_uuid(vm)
        doc = etree.fromstring(_wait(lambda: _status(stats_server, f"/vm_rrd?uuid={uuid}")[2]
                                     if _status(stats_server, f"/vm_rrd?uuid={uuid}")[0] == 200
                                     else None, 15, "the new VM's RRD"))
        assert [r.findtext("cf") for r in doc.findall("rra")] == \
            ["AVERAGE"] + ["AVERAGE", "MIN", "MAX"] * 3
        doc = etree.fromstring(_curl(stats_server, f"/vm_rrd?uuid={env['vm_uuid']}"))
        assert len(doc.findall("rra")) == 4                     # created before the flag
    finally:
        x.pool.remove_from_other_config(pool, "create_min_max_in_new_VM_RRDs")
    data_dir = stats_server.data_dir / "rrd"
    x.VM.hard_shutdown(vm)
    path = data_dir / f"vm-{uuid}.xml"
    _wait(path.exists, 10, "the halted VM's file")
    assert _status(stats_server, f"/vm_rrd?uuid={uuid}")[0] == 200   # served from its file
    x.VM.destroy(vm)
    _wait(lambda: not path.exists(), 10, "the destroyed VM's file to go")
    assert not (data_dir / f"vm-{uuid}.xml.bak").exists()


def test_restart_keeps_history(stats_server, env):
    """Last: restarts the module's server (SIGTERM, then SIGKILL after a periodic save)."""
    srv = stats_server
    before = _dump_values(_curl(srv, "/host_rrd"))
    vm_before = _dump_values(_curl(srv, f"/vm_rrd?uuid={env['vm_uuid']}"))
    srv.restart()
    after = _dump_values(_curl(srv, "/host_rrd"))
    assert after[0] >= before[0]
    old_rows = before[2][0][2]
    known_before = [r for r in old_rows if not math.isnan(r[0])]
    assert known_before
    # the 5 s archive, shifted by the time the restart took: the old rows are still there
    shift = (after[0] // 5 - before[0] // 5)
    new_rows = after[2][0][2]
    kept = new_rows[:len(new_rows) - shift] if shift else new_rows
    assert len(old_rows[shift:]) == len(kept)
    for r1, r2 in zip(old_rows[shift:], kept):
        assert r1 == pytest.approx(r2, nan_ok=True)
    vm_after = _dump_values(_curl(srv, f"/vm_rrd?uuid={env['vm_uuid']}"))
    assert vm_after[0] >= vm_before[0]
    # SIGKILL after a periodic save (every 3 s here): the files load at the next start
    time.sleep(4)
    srv.kill9()
    srv.start()
    again = _dump_values(_curl(srv, "/host_rrd"))
    assert again[0] >= after[0]
    assert not list((srv.data_dir / "rrd").glob("*.corrupt"))
    assert not list((srv.data_dir / "rrd").glob(".*.tmp"))
