"""rrd_updates and dump renderers, parsed back the way clients parse them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from lxml import etree

from rrd.engine import CF, DataSource, DSType, RRDStore
from rrd.render import dump_json, dump_xml, format_exact, format_value
from rrd.updates import xport_json, xport_xml

NOW = 1_700_000_040  # multiple of 5 and of 60


def _host_and_vms(n_vms: int = 3, ticks: int = 900) -> RRDStore:
    store = RRDStore()
    store.create("host:H", NOW, with_min_max=True)
    for name in ("cpu0", "cpu_avg", "memory_free_kib"):
        store.add_ds("host:H", DataSource(name, DSType.GAUGE))
    for i in range(n_vms):
        store.create(f"vm:V{i}", NOW)
        for name in ("cpu0", "memory"):
            store.add_ds(f"vm:V{i}", DataSource(name))
    ids = store.rrd_ids()
    cols = np.concatenate([store.columns(r) for r in ids])
    for k in range(1, ticks + 1):
        store.tick(NOW + 5 * k, cols, cols * 1000.0 + k)  # value encodes (column, tick)
    return store


def _xml(x) -> etree._Element:
    chunks = list(xport_xml(x))
    assert len(chunks) > 2 and all(isinstance(c, bytes) for c in chunks)
    return etree.fromstring(b"".join(chunks))


@pytest.mark.parametrize("x,s", [
    (0.0, "0.0"), (-0.0, "-0.0"), (math.nan, "NaN"), (math.inf, "Infinity"),
    (-math.inf, "-Infinity"), (0.1 + 0.2, "0.3"), (5.0, "5"), (1e15, "1e+15"),
    (123456.789, "123456.789"), (1e-5, "1e-05"), (-2.5, "-2.5")])
def test_number_formats(x, s):
    assert format_value(x) == s


def test_exact_format_round_trips():
    rng = np.random.default_rng(3)
    for x in np.concatenate([rng.normal(0, 1e6, 500), rng.random(500) * 1e-300]).tolist():
        assert float(format_exact(x)) == x
    assert format_exact(math.inf) == "Infinity" and format_exact(math.nan) == "NaN"


def test_rrd_updates_xml_rows_and_legend():
    store = _host_and_vms()
    last = store.last_update("host:H")
    x = store.xport(["host:H", "vm:V0", "vm:V1"], start=last - 600)
    root = _xml(x)
    meta = root.find("meta")
    assert [c.tag for c in meta] == ["start", "step", "end", "rows", "columns", "legend"]
    assert meta.findtext("step") == "5" and int(meta.findtext("end")) == last
    legend = [e.text for e in meta.find("legend")]
    assert legend[:3] == ["AVERAGE:host:H:cpu0", "AVERAGE:host:H:cpu_avg",
                          "AVERAGE:host:H:memory_free_kib"]
    assert legend[3:] == ["AVERAGE:vm:V0:cpu0", "AVERAGE:vm:V0:memory",
                          "AVERAGE:vm:V1:cpu0", "AVERAGE:vm:V1:memory"]
    rows = root.find("data").findall("row")
    assert int(meta.findtext("rows")) == len(rows) == 120
    times = [int(r.findtext("t")) for r in rows]
    assert times == [last - 5 * i for i in range(120)]  # newest first
    cols = np.concatenate([store.columns(r) for r in ("host:H", "vm:V0", "vm:V1")])
    for i, r in enumerate(rows):
        k = (times[i] - NOW) // 5
        assert [float(v.text) for v in r.findall("v")] == (cols * 1000.0 + k).tolist()


def test_xen_orchestra_request_gets_its_step():
    """cf=AVERAGE&interval=60&json: XO fails unless meta.step == interval."""
    store = _host_and_vms()
    last = store.last_update("host:H")
    doc = json.loads(b"".join(xport_json(store.xport(
        ["host:H", "vm:V0"], start=last - 3600, interval=60, cf=CF.AVERAGE))))
    meta = doc["meta"]
    assert meta["step"] == "60" and all(isinstance(v, str) for k, v in meta.items() if k != "legend")
    assert meta["legend"][0] == "AVERAGE:host:H:cpu0" and len(meta["legend"]) == 5
    assert last % 60 == 0 and int(meta["rows"]) == len(doc["data"]) == 3600 // 60 + 1
    assert int(meta["end"]) == last // 60 * 60
    for row in doc["data"]:
        assert all(isinstance(v, str) for v in row["values"])
    first = doc["data"][0]
    # the 1-min AVERAGE of a value growing by 1 per 5 s tick: mean of 12 ticks
    k_end = (int(first["t"]) - NOW) // 5
    col = int(store.columns("host:H")[0])
    assert float(first["values"][0]) == pytest.approx(col * 1000.0 + k_end - 5.5, rel=1e-12)


def test_no_cf_gives_every_cf_of_the_level_and_min_max_only_where_kept():
    store = _host_and_vms(n_vms=1)
    last = store.last_update("host:H")
    x = store.xport(["host:H", "vm:V0"], start=last - 3000)
    assert x.step == 60
    cfs = [e.split(":")[0] for e in x.legend]
    assert cfs == ["AVERAGE"] * 3 + ["MIN"] * 3 + ["MAX"] * 3 + ["AVERAGE"] * 2
    x = store.xport(["host:H", "vm:V0"], start=last - 3000, cf=CF.MAX)
    assert [e.split(":")[0] for e in x.legend] == ["MAX"] * 3


def test_archive_choice_falls_back_to_coarsest_and_negative_start():
    store = _host_and_vms(n_vms=1, ticks=30)
    last = store.last_update("host:H")
    assert store.xport(["host:H"], start=last - 86400 * 400).step == 86400
    x = store.xport(["host:H"], start=-60)
    assert x.step == 5 and x.values.shape[0] == 13 and x.start == last - 60
    assert store.xport(["host:H"], start=last - 600, interval=3600).step == 3600


def test_dump_xml_and_json_same_tree():
    store = _host_and_vms(n_vms=1, ticks=50)
    store.update("host:H", NOW + 5 * 51 + 2, [math.nan, 1.0, math.inf])
    state = store.export("host:H")
    root = etree.fromstring(b"".join(dump_xml(state)))
    assert root.findtext("lastupdate") == str(NOW + 5 * 51 + 2)
    assert [d.findtext("name") for d in root.findall("ds")] == ["cpu0", "cpu_avg",
                                                                "memory_free_kib"]
    rras = root.findall("rra")
    assert [r.findtext("cf") for r in rras] == ["AVERAGE"] + ["AVERAGE", "MIN", "MAX"] * 3
    db = rras[0].find("database").findall("row")
    assert len(db) == 120
    values = [[float(v.text) for v in r.findall("v")] for r in db]
    np.testing.assert_array_equal(values, state.archives[0].rows)  # oldest first
    assert values[-1][1:] == [1.0, math.inf]
    doc = json.loads(b"".join(dump_json(state)))
    assert doc["lastupdate"] == root.findtext("lastupdate")
    assert doc["ds"][2]["last_ds"] == "Infinity" == root.findall("ds")[2].findtext("last_ds")
    assert len(doc["rra"]) == 10 and doc["rra"][1]["params"]["xff"] == "1.0"
    np.testing.assert_array_equal([[float(v) for v in r] for r in doc["rra"][0]["database"]],
                                  values)


def test_every_kind_of_value_renders_like_percent_g():
    """Out-of-range magnitudes go through the per-value path, others vectorised."""
    store = RRDStore()
    store.create("vm:W", NOW)
    values = [0.0, 1e20, 3e-12, -2.5e-6, 123.456, 1e15, math.inf, -math.inf, math.nan]
    for i in range(len(values)):
        store.add_ds("vm:W", DataSource(f"d{i}"))
    for k in range(1, 4):
        store.update("vm:W", NOW + 5 * k, values)
    x = store.xport(["vm:W"], start=NOW + 5)
    rows = _xml(x).find("data").findall("row")
    assert len(rows) == 3
    for r in rows:
        assert [v.text for v in r.findall("v")] == [format_value(v) for v in values]
    doc = json.loads(b"".join(xport_json(x)))
    assert doc["data"][0]["values"] == [format_value(v) for v in values]


def test_rrd_behind_the_others_shows_no_stale_rows():
    store = RRDStore()
    for rid in ("host:H", "vm:old"):
        store.create(rid, NOW)
        store.add_ds(rid, DataSource("x"))
    for k in range(1, 200):  # both wrap their 120-row ring
        store.update("host:H", NOW + 5 * k, [1.0])
        if k < 150:
            store.update("vm:old", NOW + 5 * k, [2.0])
    x = store.xport(["host:H", "vm:old"], start=NOW + 5 * 100)
    assert x.end == NOW + 5 * 199
    old = x.values[:, 1]
    times = x.times
    assert np.isnan(old[times > NOW + 5 * 149]).all()
    assert (old[times <= NOW + 5 * 149] == 2.0).all() and (x.values[:, 0] == 1.0).all()
