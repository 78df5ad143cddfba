"""Dump files: exact round trip, rrdtool interop, corruption, backups."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from rrd import persist
from rrd.engine import LAYOUT_MIN_MAX, DataSource, DSType, RRDStore
from rrd.errors import CorruptRRD
from rrd.render import dump_xml
from tests.rrd import rrdtool_cli as cli

T0 = 1_700_000_001
DSS = [DataSource("cpu0", DSType.DERIVE, 0.0, 1000.0), DataSource("mem", DSType.GAUGE, 0.0),
       DataSource("io", DSType.ABSOLUTE)]


def _updates(n: int, t0: int = T0, seed: int = 5):
    rng = np.random.default_rng(seed)
    t, c, out = t0, 10, []
    for _ in range(n):
        t += int(rng.integers(3, 9))
        c += int(rng.integers(0, 2000))
        vals = [float(c), float(rng.random() * 1e9), float(rng.integers(0, 5000))]
        if rng.random() < 0.1:
            vals[int(rng.integers(0, 3))] = math.nan
        out.append((t, vals))
    return out


def _store(updates, min_max=True) -> RRDStore:
    return cli.fed_store("host:h", T0, DSS, updates, with_min_max=min_max)


def _assert_identical(a, b):
    assert a.last_update == b.last_update and a.layout == b.layout
    assert [(d.name, d.type, d.heartbeat) for d in a.data_sources] == \
        [(d.name, d.type, d.heartbeat) for d in b.data_sources]
    np.testing.assert_array_equal([[d.last_ds, d.value, d.unknown_sec] for d in a.ds],
                                  [[d.last_ds, d.value, d.unknown_sec] for d in b.ds])
    for x, y in zip(a.archives, b.archives):
        for f in ("primary", "secondary", "value", "unknown", "rows"):
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f)


def test_save_load_round_trip_is_exact_and_keeps_consolidating(tmp_path):
    updates = _updates(1500)
    store = _store(updates[:1000])
    path = tmp_path / "host.xml"
    persist.save(path, store.export("host:h"), now=T0)
    loaded = persist.load(path)
    _assert_identical(store.export("host:h"), loaded)
    other = RRDStore()
    other.restore("host:h", loaded)
    for t, vals in updates[1000:]:  # mid-CDP state (cdp_prep, unknown_sec) must carry on
        store.update("host:h", t, vals)
        other.update("host:h", t, vals)
    _assert_identical(store.export("host:h"), other.export("host:h"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host.xml", "host.xml.bak"]


@cli.needs_rrdtool
def test_rrdtool_restores_our_dump_and_agrees(tmp_path):
    updates = _updates(1200)
    store = _store(updates[:800])
    (tmp_path / "ours.xml").write_bytes(b"".join(dump_xml(store.export("host:h"))))
    rrd_file = tmp_path / "r.rrd"
    cli.run("restore", str(tmp_path / "ours.xml"), str(rrd_file))
    cli.assert_same(cli.ours(store.export("host:h")), cli.dump(rrd_file))
    cli.update(rrd_file, DSS, updates[800:])  # xff 1.0 archives included
    for t, vals in updates[800:]:
        store.update("host:h", t, vals)
    cli.assert_same(cli.ours(store.export("host:h")), cli.dump(rrd_file))


@cli.needs_rrdtool
def test_we_load_rrdtools_own_dump(tmp_path):
    updates = _updates(300)
    store = _store(updates, min_max=False)
    rrd_file = tmp_path / "r.rrd"
    cli.create(rrd_file, T0, DSS, store.layout("host:h"))
    cli.update(rrd_file, DSS, updates)
    state = persist.parse_dump(cli.run("dump", str(rrd_file)), "r.xml")
    assert state.layout == store.layout("host:h")
    cli.assert_same(cli.ours(state), cli.ours(store.export("host:h")))


@pytest.mark.parametrize("mangle,reason", [
    (lambda b: b[: len(b) // 2], "not well-formed"),
    (lambda b: b"", "not well-formed"),
    (lambda b: b.replace(b"<rrd>", b"<rrdx>", 1).replace(b"</rrd>", b"</rrdx>"), "root"),
    (lambda b: b.replace(b"<type>GAUGE</type>", b"<type>COUNTER</type>", 1), "type"),
    (lambda b: b.replace(b"<lastupdate>", b"<lastupdate>x", 1), "integer"),
    (lambda b: b.replace(b"<v>", b"<v>zz", 1), "not a number"),
    (lambda b: b.replace(b"<row>", b"<row><v>1.0</v>", 1), "rows"),
    (lambda b: b.replace(b"<cf>MIN</cf>", b"<cf>LAST</cf>", 1), "consolidation"),
    (lambda b: b.replace(b"<minimal_heartbeat>300", b"<minimal_heartbeat>0", 1), "heartbeat"),
    (lambda b: b.replace(b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
                         b'<?xml version="1.0"?><!DOCTYPE rrd [<!ENTITY x "boom">]>', 1),
     "DOCTYPE"),
])
def test_corrupt_files_raise_with_the_path(tmp_path, mangle, reason):
    store = _store(_updates(50))
    good = b"".join(dump_xml(store.export("host:h")))
    path = tmp_path / "vm.xml"
    path.write_bytes(mangle(good))
    with pytest.raises(CorruptRRD) as e:
        persist.load(path)
    assert e.value.path == str(path) and str(path) in str(e.value)
    assert reason in str(e.value)


def test_external_entities_are_not_resolved(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("42")
    doc = (f'<?xml version="1.0"?><!DOCTYPE rrd [<!ENTITY s SYSTEM "file://{secret}">]>'
           "<rrd><version>0003</version><step>&s;</step></rrd>").encode()
    with pytest.raises(CorruptRRD):
        persist.parse_dump(doc, "x.xml")


def test_backup_fallback_and_daily_refresh(tmp_path):
    path = tmp_path / "vm.xml"
    bak = tmp_path / "vm.xml.bak"
    s1 = _store(_updates(100)).export("host:h")
    persist.save(path, s1, now=T0)
    assert bak.read_bytes() == path.read_bytes()
    s2 = _store(_updates(200)).export("host:h")
    persist.save(path, s2, now=T0 + 3600)  # backup younger than a day: kept
    _assert_identical(persist.load(bak), s1)
    path.write_bytes(path.read_bytes()[:1000])  # half-written / damaged
    state, used = persist.load_or_backup(path)
    assert used == bak
    _assert_identical(state, s1)
    persist.save(path, s2, now=T0 + 86400)  # a day later: refreshed
    _assert_identical(persist.load(bak), s2)
    os.unlink(path)
    assert persist.load_or_backup(path)[1] == bak
    os.unlink(bak)
    with pytest.raises(FileNotFoundError):
        persist.load_or_backup(path)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "vm.xml"
    path.write_bytes(b"old")

    def chunks():
        yield b"new partial"
        raise OSError("disk full")

    with pytest.raises(OSError):
        persist._write_atomic(path, chunks())
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["vm.xml"]


def test_layout_of_min_max_rrd_survives(tmp_path):
    store = _store(_updates(20))
    persist.save(tmp_path / "h.xml", store.export("host:h"), now=T0)
    assert persist.load(tmp_path / "h.xml").layout == LAYOUT_MIN_MAX


def test_fuzzed_dumps_raise_only_corrupt_rrd():
    """Mutated files either load or raise CorruptRRD: no other error escapes."""
    from rrd.engine import CF, Archive, Layout
    small = Layout((Archive(CF.AVERAGE, 1, 4, 0.5), Archive(CF.MAX, 2, 3, 1.0)))
    store = cli.fed_store("vm:f", T0, DSS[:2], [(T0 + 5 * k, [float(k), 1.5]) for k in range(1, 9)],
                          layout=small)
    good = b"".join(dump_xml(store.export("vm:f")))
    rng = np.random.default_rng(11)
    loaded = 0
    for _ in range(400):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 4))):
            op, i = rng.integers(0, 3), int(rng.integers(0, len(data)))
            if op == 0:
                data[i] = int(rng.choice(list(b"<>/0123456789.-eU x&;")))
            elif op == 1:
                del data[i: i + int(rng.integers(1, 30))]
            else:
                data[i:i] = data[int(rng.integers(0, len(data))):][: int(rng.integers(1, 30))]
        try:
            persist.parse_dump(bytes(data), "fuzz.xml")
            loaded += 1
        except CorruptRRD as e:
            assert e.path == "fuzz.xml"
    assert 0 < loaded < 400  # both outcomes were exercised
