"""httpd/stats.py without a server: /proc readings, VM readings, the rrd_updates row cache, the
RRD files (corrupt file -> backup; a save killed with SIGKILL leaves a usable file)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from httpd.backends.base import DomainCounters
from httpd.stats.rrdset import RRDSet, load_file
from httpd.stats.sources import HOST, SR, VM, ProcReader, dom0_readings, rrd_id, vm_readings
from rrd import persist
from rrd.engine import CF
from rrd import updates as updates_module
from rrd.updates import render_updates, warm_rows, xport_json, xport_xml

ROOT = Path(__file__).resolve().parents[2]


def _fake_proc(d: Path, busy: tuple[int, int], idle: tuple[int, int], rx: int, tx: int) -> None:
    (d / "net").mkdir(parents=True, exist_ok=True)
    (d / "self" / "fd").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (d / "self" / "fd" / str(i)).touch()
    lines = [f"cpu  {sum(busy)} 0 0 {sum(idle)} 0 0 0 0 0 0"]
    lines += [f"cpu{i} {b} 0 0 {k} 0 0 0 0 0 0" for i, (b, k) in enumerate(zip(busy, idle))]
    (d / "stat").write_text("\n".join(lines + ["intr 1 2 3"]) + "\n")
    (d / "loadavg").write_text("0.25 0.50 0.75 1/83 29722\n")
    (d / "meminfo").write_text("MemTotal:       16000 kB\nMemFree:         4000 kB\n")
    (d / "net" / "dev").write_text(
        "Inter-|   Receive\n face |bytes\n"
        f"    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n"
        f"  eth0: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n")
    (d / "self" / "status").write_text("Name: x\nVmRSS:\t  12345 kB\n")


def test_proc_reader_fractions_and_counters(tmp_path):
    _fake_proc(tmp_path, (100, 200), (100, 200), 1000, 500)
    reader = ProcReader(str(tmp_path))
    first = reader.readings()
    assert math.isnan(first["cpu0"]) and math.isnan(first["cpu_avg"])   # needs two samples
    _fake_proc(tmp_path, (150, 200), (150, 300), 6000, 1500)            # cpu0 50 %, cpu1 0 %
    r = reader.readings()
    assert r["cpu0"] == 0.5 and r["cpu1"] == 0.0 and r["cpu_avg"] == pytest.approx(50 / 200)
    assert r["loadavg"] == 0.25
    assert r["memory_total_kib"] == 16000 and r["memory_free_kib"] == 4000
    assert r["pif_eth0_rx"] == 6000 and r["pif_eth0_tx"] == 1500 and "pif_lo_rx" not in r
    assert r["pif_aggr_rx"] == 6000 and r["pif_aggr_tx"] == 1500
    assert r["xapi_memory_usage_kib"] == 12345 and r["xapi_open_fds"] == 3
    assert reader.readings(["lo"])["pif_aggr_rx"] == 999                # PIFs chosen by name
    d0 = dom0_readings(r)
    assert d0["memory"] == 12000 * 1024 and d0["memory_internal_free"] == 4000
    assert d0["cpu0"] == 0.5


def test_vm_readings_follow_the_counters():
    c1 = DomainCounters((10.0, 20.0), 2**28, 2**28, 1000, {"0": (100, 50)}, {"xvda": (4096, 0)})
    c2 = DomainCounters((12.5, 20.0), 2**28, 2**28, 1000, {"0": (600, 80)}, {"xvda": (8192, 512)})
    r1 = vm_readings(c1, None, 100.0)
    assert math.isnan(r1["cpu0"]) and r1["vbd_xvda_read"] == 4096 and r1["vif_0_rx"] == 100
    r2 = vm_readings(c2, (100.0, c1.cpu_seconds), 105.0)
    assert r2["cpu0"] == 0.5 and r2["cpu1"] == 0.0
    assert r2["memory"] == 2**28 and r2["memory_internal_free"] == 1000
    assert r2["vbd_xvda_write"] == 512 and r2["vif_0_tx"] == 80
    # a restarted domain (counters went back) gives unknown, not a negative fraction
    assert math.isnan(vm_readings(c1, (100.0, c2.cpu_seconds), 105.0)["cpu0"])


def _filled_set(tmp_path, n_vms=5, ticks=30, t0=1_700_000_000):
    s = RRDSet(tmp_path)
    s.create(rrd_id(HOST, "h"), t0, True)
    for i in range(n_vms):
        s.create(rrd_id(VM, f"v{i}"), t0, i % 2 == 0)
    s.create(rrd_id(SR, "s"), t0, False)
    rng = np.random.default_rng(1)
    for k in range(1, ticks + 1):
        t = t0 + 5 * k
        readings = {rrd_id(HOST, "h"): {"cpu0": rng.random(), "memory_total_kib": 1e6,
                                        "pif_eth0_rx": 1000.0 * k}}
        for i in range(n_vms):
            readings[rrd_id(VM, f"v{i}")] = {"cpu0": rng.random() if k % 7 else math.nan,
                                             "memory": 2.0**28, "vbd_xvda_read": 4096.0 * k,
                                             "memory_internal_free": 1e-9 * k}
        readings[rrd_id(SR, "s")] = {"read": 5.0, "write": 0.0}
        s.tick(t, readings)
    return s, t0 + 5 * ticks


@pytest.mark.parametrize("as_json", [False, True])
def test_cached_render_is_byte_identical(tmp_path, as_json):
    s, last = _filled_set(tmp_path)
    rids = s.store.rrd_ids()
    plain = xport_json if as_json else xport_xml
    for _ in range(3):   # cold cache, warm cache, warm cache after a tick
        for interval, cf in ((0, None), (60, None), (5, None), (0, "AVERAGE")):
            x, segs = s.xport(rids, last - 600, interval, CF(cf) if cf else None)
            plan = s.cache_plan(x, segs)
            fresh = []
            cached = s.cache.nbytes()
            got = b"".join(render_updates(x, segs, plan, as_json, batch_rows=7,
                                          view=s.view_plan(x, segs, plan, as_json), fresh=fresh))
            assert got == b"".join(plain(x))
            assert s.cache.nbytes() == cached       # a render only reads the cache
            s.cache.keep(fresh)
        last += 5
        s.tick(last, {r: {} for r in rids})
    assert s.cache.nbytes() > 0


def _render(s: RRDSet, x, segs) -> bytes:
    plan = s.cache_plan(x, segs)
    fresh = []
    text = b"".join(render_updates(x, segs, plan, False, view=s.view_plan(x, segs, plan, False),
                                   fresh=fresh))
    s.cache.keep(fresh)
    return text


def test_cache_not_used_for_an_rrd_behind_or_rewritten(tmp_path):
    s, last = _filled_set(tmp_path, n_vms=2)
    rids = s.store.rrd_ids()
    x, segs = s.xport(rids, last - 600, 0, None)
    _render(s, x, segs)
    s.forget(rrd_id(VM, "v0"), "cpu0")          # history rewritten: its rows re-rendered
    x, segs = s.xport(rids, last - 600, 0, None)
    assert _render(s, x, segs) == b"".join(xport_xml(x))
    s.store.update(rrd_id(HOST, "h"), last + 5, {"cpu0": 0.5})   # only the host moves on
    x, segs = s.xport(rids, last - 600, 0, None)
    assert _render(s, x, segs) == b"".join(xport_xml(x))


def _warm(s: RRDSet, span: int, cf: str) -> list[tuple[int, int]]:
    """Run what warm_work asks for; (rows, columns) of each piece of work."""
    done = []
    for x, segs, plan in s.warm_work(s.store.rrd_ids(), span, cf):
        s.cache.keep(warm_rows(x, segs, plan))
        done.append(x.values.shape)
    return done


@pytest.mark.parametrize("as_json", [False, True])
def test_warmed_rows_make_a_poll_format_nothing(tmp_path, monkeypatch, as_json):
    """After warm_work's rows are formatted, the poll a client makes joins cached text only,
    byte-identical to the plain renderer; after a tick only the new row is left to warm."""
    s, last = _filled_set(tmp_path, n_vms=3)
    rids = s.store.rrd_ids()
    plain = xport_json if as_json else xport_xml
    assert _warm(s, 5, "AVERAGE") == [(120, sum(len(s.store.data_sources(r)) for r in rids))]
    assert _warm(s, 5, "AVERAGE") == []                       # nothing left to format
    for _ in range(2):
        with monkeypatch.context() as m:
            m.setattr(updates_module, "_row_pieces", lambda block: pytest.fail("formatted"))
            x, segs = s.xport(rids, last - 600, 5, CF.AVERAGE)
            plan = s.cache_plan(x, segs)
            got = b"".join(render_updates(x, segs, plan, as_json,
                                          view=s.view_plan(x, segs, plan, as_json)))
        assert got == b"".join(plain(x))
        last += 5
        s.tick(last, {r: {"cpu0": 0.25} for r in rids})
        assert [shape[0] for shape in _warm(s, 5, "AVERAGE")] == [1]   # just the new row
    # a new RRD (or a rewritten one) is warmed over its whole ring, the others not at all
    s.create(rrd_id(VM, "late"), last - 5, False)
    s.tick(last, {rrd_id(VM, "late"): {"cpu0": 0.5}})
    assert _warm(s, 5, "AVERAGE") == [(120, 1)]
    # levels are warmed on their own: the 1 min ring, and MIN (only RRDs with MIN/MAX have it)
    assert [shape[0] for shape in _warm(s, 60, "AVERAGE")] == [120]
    with_min = [r for r in rids if any(a.cf is CF.MIN for a in s.store.layout(r).archives)]
    assert _warm(s, 60, "MIN") == [(120, sum(len(s.store.data_sources(r)) for r in with_min))]
    assert _warm(s, 5, "MIN") == []                            # no such archive


def test_corrupt_file_uses_backup_then_starts_anew(tmp_path, caplog):
    s, last = _filled_set(tmp_path, n_vms=1)
    rid = rrd_id(VM, "v0")
    path = s.path(rid)
    persist.save(path, s.store.export(rid), last)          # file + backup
    path.write_bytes(path.read_bytes()[:5000])             # half-written
    state = load_file(path)
    assert state is not None and state.last_update == last
    assert "using its backup" in caplog.text
    path.with_name(path.name + ".bak").write_bytes(b"<rrd>garbage")
    assert load_file(path) is None                        # both bad: a new RRD, no crash
    assert path.with_name(path.name + ".corrupt").exists()
    assert load_file(tmp_path / "vm-none.xml") is None


_SAVER = """
import sys, numpy as np
from httpd.stats.rrdset import RRDSet
from httpd.stats.sources import rrd_id
from rrd import persist
s = RRDSet(None)
s.create("vm:x", 1_700_000_000, True)
for k in range(1, 200):
    s.tick(1_700_000_000 + 5 * k, {"vm:x": {"cpu0": k / 1000, "memory": 2.0**28}})
state = s.store.export("vm:x")
print("ready", flush=True)
while True:
    persist.save(sys.argv[1], state, 1_700_000_000)
"""


def test_kill9_during_save_leaves_a_usable_file(tmp_path):
    """SIGKILL a process saving in a loop at random moments: the file (or its backup) always
    loads, and no half-written temporary file takes its place."""
    path = tmp_path / "vm-x.xml"
    rng = np.random.default_rng(7)
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.01, 0.3)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        state = load_file(path)
        assert state is not None and state.last_update == 1_700_000_000 + 5 * 199
        assert persist.load(path).last_update == state.last_update   # the file itself is whole
        assert not (tmp_path / "vm-x.xml.corrupt").exists()
    os.listdir(tmp_path)
