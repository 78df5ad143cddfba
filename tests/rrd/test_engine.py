"""The engine against the real rrdtool, plus the vectorised store's bookkeeping."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest

from rrd.engine import (CF, LAYOUT, LAYOUT_MIN_MAX, Archive, DataSource, DSType, Layout,
                        RRDStore)
from rrd.errors import RRDUsageError, StaleUpdate, UnknownRRD
from tests.rrd import rrdtool_cli as cli

T0 = 1_700_000_003  # deliberately not on a step boundary

# Small archives so a few hundred updates wrap every ring and close many CDPs.
SMALL = Layout((
    Archive(CF.AVERAGE, 1, 12, 0.5),
    Archive(CF.AVERAGE, 3, 10, 0.5),
    Archive(CF.MIN, 3, 10, 0.999),
    Archive(CF.MAX, 3, 10, 0.999),
    Archive(CF.AVERAGE, 7, 6, 0.3),
    Archive(CF.MAX, 7, 6, 0.999),
))

DSS = [
    DataSource("g", DSType.GAUGE, 0.0, 100.0),
    DataSource("free", DSType.GAUGE),
    DataSource("d", DSType.DERIVE, 0.0, 50.0),
    DataSource("a", DSType.ABSOLUTE, 0.0, 40.0),
]


def _series(seed: int, n: int, max_gap: int = 12) -> list[tuple[int, list[float]]]:
    """Irregular times, some gaps beyond the heartbeat, unknown and out-of-range values."""
    rng = np.random.default_rng(seed)
    t, counter, out = T0, 1000, []
    for i in range(n):
        t += int(rng.integers(1, max_gap))
        if rng.random() < 0.03:
            t += int(rng.integers(290, 700))  # around / beyond the 300 s heartbeat
        counter += int(rng.integers(0, 300))
        g = float(rng.normal(50, 40))  # sometimes outside [0, 100]
        vals = [g, float(rng.normal(0, 1e6)), float(counter), float(rng.integers(0, 400))]
        for j in range(4):
            if rng.random() < 0.08:
                vals[j] = math.nan
        out.append((t, vals))
    return out


def _ours(layout: Layout, updates, dss=DSS) -> RRDStore:
    return cli.fed_store("vm:x", T0, dss, updates, layout=layout)


def _rrdtool(tmp_path, layout: Layout, updates, dss=DSS) -> dict:
    path = tmp_path / "ref.rrd"
    cli.create(path, T0, dss, layout)
    cli.update(path, dss, updates)
    return cli.dump(path)


@cli.needs_rrdtool
@pytest.mark.parametrize("seed,max_gap", [(1, 12), (2, 4), (3, 30), (4, 2)])
def test_consolidation_matches_rrdtool(tmp_path, seed, max_gap):
    """Compared at several checkpoints so overwritten rings cannot hide a bug."""
    updates = _series(seed, 400, max_gap)
    store = _ours(SMALL, [])
    path = tmp_path / "ref.rrd"
    cli.create(path, T0, DSS, SMALL)
    for i in range(0, len(updates), 50):
        chunk = updates[i:i + 50]
        for t, vals in chunk:
            store.update("vm:x", t, vals)
        cli.update(path, DSS, chunk)
        cli.assert_same(cli.ours(store.export("vm:x")), cli.dump(path))


@cli.needs_rrdtool
def test_aligned_ticks_match_rrdtool_on_real_layout(tmp_path):
    """The standard 10-archive layout with regular 5 s updates (xff 0.999 in both)."""
    layout = Layout(tuple(Archive(a.cf, a.pdp_per_row, a.rows, min(a.xff, 0.999))
                          for a in LAYOUT_MIN_MAX.archives))
    start = 1_700_000_000
    rng = np.random.default_rng(7)
    updates = []
    for i in range(1, 3000):
        vals = [float(rng.random() * 100), float(rng.normal()), float(1000 + 7 * i), 12.0]
        if 1200 < i < 1300:
            vals = [math.nan] * 4
        updates.append((start + 5 * i, vals))
    store = RRDStore()
    store.create("host:h", start, layout=layout)
    for d in DSS:
        store.add_ds("host:h", d)
    cols = store.columns("host:h")
    for t, vals in updates:  # through the vectorised tick this time
        assert store.tick(t, cols, np.array(vals)) == 0
    path = tmp_path / "ref.rrd"
    cli.create(path, start, DSS, layout)
    cli.update(path, DSS, updates)
    cli.assert_same(cli.ours(store.export("host:h")), cli.dump(path))


@cli.needs_rrdtool
def test_xff_one_matches_rrdtool_restored(tmp_path):
    """xff 1.0 (refused by rrdtool create) checked through restore: an all-unknown
    MIN/MAX row becomes +/-Infinity there too."""
    layout = Layout((Archive(CF.AVERAGE, 1, 10, 0.5), Archive(CF.AVERAGE, 3, 8, 1.0),
                     Archive(CF.MIN, 3, 8, 1.0), Archive(CF.MAX, 3, 8, 1.0)))
    updates = [(T0 + 5 * i, [math.nan if 20 <= i < 40 else float(i), math.nan, float(i), 1.0])
               for i in range(1, 60)]
    path = tmp_path / "ref.rrd"
    cli.create(path, T0, DSS, layout)
    xml = cli.run("dump", str(path)).replace(b"<xff>9.9900000000e-01</xff>",
                                             b"<xff>1.0000000000e+00</xff>")
    (tmp_path / "d.xml").write_bytes(xml)
    cli.run("restore", "-f", str(tmp_path / "d.xml"), str(path))
    cli.update(path, DSS, updates)
    theirs = cli.dump(path)
    mine = cli.ours(_ours(layout, updates).export("vm:x"))
    cli.assert_same(mine, theirs)
    assert np.isinf(mine["rra"][2]["rows"]).any()  # the case this test is about


def test_gauge_average_by_hand():
    """A GAUGE stepping 0, 10, 20 at aligned times: 5 s rows are the values."""
    store = RRDStore()
    store.create("vm:a", 1000, layout=LAYOUT)
    store.add_ds("vm:a", DataSource("x"))
    for i, v in enumerate([0.0, 10.0, 20.0, 30.0], start=1):
        store.update("vm:a", 1000 + 5 * i, [v])
    end, step, rows = store.fetch("vm:a", 0)
    assert (end, step) == (1020, 5)
    assert rows[:4, 0].tolist() == [30.0, 20.0, 10.0, 0.0]
    assert np.isnan(rows[4:, 0]).all()
    assert store.latest("vm:a", "x") == 30.0


def test_heartbeat_gap_and_out_of_range_are_unknown():
    store = RRDStore()
    store.create("vm:a", 1000, layout=LAYOUT)
    store.add_ds("vm:a", DataSource("x", DSType.GAUGE, 0.0, 1.0))
    store.update("vm:a", 1005, [0.5])
    store.update("vm:a", 1010, [7.0])  # above max
    store.update("vm:a", 1015, [0.25])
    store.update("vm:a", 1400, [0.75])  # 385 s later: beyond the heartbeat
    _, _, rows = store.fetch("vm:a", 0)
    assert rows[0, 0] != rows[0, 0]  # NaN
    assert np.isnan(rows[1:77, 0]).all()
    assert rows[77, 0] == 0.25 and np.isnan(rows[78, 0]) and rows[79, 0] == 0.5


def test_stale_update_and_misuse():
    store = RRDStore()
    store.create("vm:a", 1000)
    store.add_ds("vm:a", DataSource("x"))
    store.update("vm:a", 1005, [1.0])
    with pytest.raises(StaleUpdate):
        store.update("vm:a", 1005, [1.0])
    with pytest.raises(RRDUsageError):
        store.update("vm:a", 1010, [1.0, 2.0])
    with pytest.raises(UnknownRRD):
        store.update("vm:nope", 1010, [1.0])
    with pytest.raises(UnknownRRD):
        store.update("vm:a", 1010, {"y": 1.0})
    with pytest.raises(RRDUsageError):
        store.create("vm:a", 1000)
    with pytest.raises(RRDUsageError):
        store.add_ds("vm:a", DataSource("x", DSType.DERIVE))
    with pytest.raises(RRDUsageError):
        DataSource("bad name")
    with pytest.raises(RRDUsageError):
        DataSource("x", min=2.0, max=1.0)
    # stale RRDs are skipped by the tick, not an error
    assert store.tick(1005, store.columns("vm:a"), np.array([1.0])) == 1


def test_layouts_follow_the_reference():
    assert [(a.cf, a.pdp_per_row, a.rows, a.xff) for a in LAYOUT.archives] == [
        (CF.AVERAGE, 1, 120, 0.5), (CF.AVERAGE, 12, 120, 0.5),
        (CF.AVERAGE, 720, 168, 0.5), (CF.AVERAGE, 17280, 366, 0.5)]
    mm = [(a.cf, a.pdp_per_row, a.xff) for a in LAYOUT_MIN_MAX.archives]
    assert mm[0] == (CF.AVERAGE, 1, 0.5) and len(mm) == 10
    assert mm[1:4] == [(CF.AVERAGE, 12, 1.0), (CF.MIN, 12, 1.0), (CF.MAX, 12, 1.0)]
    assert sum(a.rows for a in LAYOUT.archives) == 774


def test_store_columns_many_rrds_add_remove():
    """Values land in their own columns across adds, removes and reuse."""
    store = RRDStore()
    t = 10_000
    names = [f"vm:{i}" for i in range(300)]
    for i, n in enumerate(names):
        store.create(n, t, with_min_max=(i % 7 == 0))
        for j in range(i % 5 + 1):
            store.add_ds(n, DataSource(f"ds{j}"))
    for n in names[::3]:
        store.remove(n)
    for n in names[1::3]:
        store.remove_ds(n, "ds0")
    for i in range(300, 400):  # reuses freed columns
        store.create(f"vm:{i}", t)
        store.add_ds(f"vm:{i}", DataSource("ds0"))
    live = store.rrd_ids()
    cols = np.concatenate([store.columns(n) for n in live])
    assert len(set(cols.tolist())) == len(cols)
    expect = {}
    for k in range(1, 4):
        vals = cols * 10.0 + k
        store.tick(t + 5 * k, cols, vals)
        expect = dict(zip(cols.tolist(), vals.tolist()))
    for n in live:
        for ds, c in zip(store.data_sources(n), store.columns(n).tolist()):
            assert store.latest(n, ds.name) == expect[c]
    # a data source missing from the tick is unknown, the others are not
    store.tick(t + 20, cols[1:], cols[1:] * 10.0)
    first = next(n for n in live if store.columns(n)[0] == cols[0])
    assert math.isnan(store.latest(first, store.data_sources(first)[0].name))


def test_new_rrd_joins_a_running_store():
    store = RRDStore()
    store.create("host:h", 1000, with_min_max=True)
    c1 = store.add_ds("host:h", DataSource("cpu"))
    for k in range(1, 4):
        store.tick(1000 + 5 * k, np.array([c1]), np.array([1.0]))
    store.create("vm:v", 1012)  # different last update: updated as its own group
    c2 = store.add_ds("vm:v", DataSource("cpu"))
    store.tick(1020, np.array([c1, c2]), np.array([2.0, 3.0]))
    store.tick(1025, np.array([c1, c2]), np.array([2.0, 3.0]))
    assert store.latest("host:h", "cpu") == 2.0 and store.latest("vm:v", "cpu") == 3.0
    assert store.last_update("vm:v") == store.last_update("host:h") == 1025


def test_forget_resets_one_data_source():
    store = RRDStore()
    store.create("vm:a", 1000)
    store.add_ds("vm:a", DataSource("x"))
    store.add_ds("vm:a", DataSource("y"))
    for k in range(1, 20):
        store.update("vm:a", 1000 + 5 * k, [1.0, 2.0])
    store.forget("vm:a", "x")
    _, _, rows = store.fetch("vm:a", 0)
    assert np.isnan(rows[:, 0]).all() and rows[0, 1] == 2.0
    store.update("vm:a", 1100, [4.0, 2.0])
    assert store.latest("vm:a", "x") == 4.0


def test_add_ds_keeps_history_of_others_and_updates_metadata():
    store = RRDStore()
    store.create("vm:a", 1000)
    store.add_ds("vm:a", DataSource("x"))
    store.update("vm:a", 1005, [1.0])
    store.add_ds("vm:a", DataSource("y"))
    store.update("vm:a", 1010, [2.0, 5.0])
    store.add_ds("vm:a", DataSource("x", units="B/s", description="bytes"))
    assert store.data_sources("vm:a")[0].units == "B/s"
    _, _, rows = store.fetch("vm:a", 0)
    assert rows[:2, 0].tolist() == [2.0, 1.0]
    assert rows[0, 1] == 5.0 and np.isnan(rows[1, 1])


def test_capacity_grows_geometrically_and_reuses_freed_columns():
    store = RRDStore()
    store.create("vm:a", 0)
    caps = set()
    for i in range(4000):
        store.add_ds("vm:a", DataSource(f"d{i}"))
        caps.add(store.columns_in_use()[1])
    used, cap = store.columns_in_use()
    # a copy only every 1/8 of growth (26 sizes for 4,000 columns; one per column would be
    # 4,000), spare room within 1/8
    assert used == 4000 and cap <= used * 9 / 8 and len(caps) <= 30
    for i in range(500):
        store.remove_ds("vm:a", f"d{i}")
    store.create("vm:b", 0)
    for i in range(500):
        store.add_ds("vm:b", DataSource(f"d{i}"))
    assert store.columns_in_use() == (4000, cap)              # freed columns reused
