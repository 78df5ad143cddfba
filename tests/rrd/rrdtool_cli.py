"""Drive the real ``rrdtool`` CLI as the reference peer for the rrd tests."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from rrd.engine import DataSource, DSType, Layout, RRDState, RRDStore

RRDTOOL = shutil.which("rrdtool")
needs_rrdtool = pytest.mark.skipif(RRDTOOL is None, reason="rrdtool CLI not installed")


def run(*args: str, input: bytes | None = None) -> bytes:
    return subprocess.run([RRDTOOL, *args], check=True, capture_output=True, input=input).stdout


def _bound(v: float) -> str:
    return "U" if math.isnan(v) else repr(v)


def create(path: Path, start: int, dss: list[DataSource], layout: Layout,
           *, max_xff: float = 0.999) -> None:
    """``rrdtool create`` of the same RRD; xff above ``max_xff`` is clamped
    because rrdtool refuses 1.0 at create time."""
    args = ["create", str(path), "--start", str(start), "--step", str(layout.step)]
    args += [f"DS:{d.name}:{d.type.value}:{d.heartbeat}:{_bound(d.min)}:{_bound(d.max)}"
             for d in dss]
    args += [f"RRA:{a.cf.value}:{min(a.xff, max_xff)}:{a.pdp_per_row}:{a.rows}"
             for a in layout.archives]
    run(*args)


def reading(v: float, t: DSType) -> str:
    if math.isnan(v):
        return "U"
    return str(int(v)) if t is DSType.DERIVE else repr(v)


def update(path: Path, dss: list[DataSource], updates: list[tuple[int, list[float]]]) -> None:
    args = [f"{t}:" + ":".join(reading(v, d.type) for v, d in zip(vals, dss))
            for t, vals in updates]
    for i in range(0, len(args), 500):
        run("update", str(path), *args[i:i + 500])


def _num(text: str) -> float:
    text = text.strip()
    return math.nan if text in ("U", "NaN", "nan") else float(text)


def dump(path: Path) -> dict:
    """The parts of ``rrdtool dump`` we compare, as plain floats."""
    root = etree.fromstring(run("dump", str(path)))
    out = {"lastupdate": int(root.findtext("lastupdate")), "ds": [], "rra": []}
    for ds in root.findall("ds"):
        out["ds"].append([_num(ds.findtext(k)) for k in ("last_ds", "value", "unknown_sec")])
    for rra in root.findall("rra"):
        cdp = [[_num(d.findtext(k)) for k in ("primary_value", "secondary_value", "value",
                                              "unknown_datapoints")]
               for d in rra.find("cdp_prep").findall("ds")]
        rows = [[_num(v.text) for v in row.findall("v")] for row in rra.find("database").findall("row")]
        out["rra"].append({"cf": rra.findtext("cf").strip(), "cdp": np.array(cdp),
                           "rows": np.array(rows)})
    return out


def ours(state: RRDState) -> dict:
    """Our exported state in the shape of :func:`dump`."""
    return {
        "lastupdate": state.last_update,
        "ds": [[d.last_ds, d.value, d.unknown_sec] for d in state.ds],
        "rra": [{"cf": a.archive.cf.value,
                 "cdp": np.stack((a.primary, a.secondary, a.value, a.unknown), axis=1),
                 "rows": a.rows} for a in state.archives],
    }


def assert_same(mine: dict, theirs: dict, rtol: float = 1e-9) -> None:
    """Equal within ``rtol`` (rrdtool dump prints 11 digits); NaN equals NaN."""
    assert mine["lastupdate"] == theirs["lastupdate"]
    np.testing.assert_allclose(np.array(mine["ds"], float), np.array(theirs["ds"], float),
                               rtol=rtol, atol=0, err_msg="ds pdp_prep")
    assert len(mine["rra"]) == len(theirs["rra"])
    for i, (a, b) in enumerate(zip(mine["rra"], theirs["rra"])):
        assert a["cf"] == b["cf"]
        np.testing.assert_allclose(a["cdp"], b["cdp"], rtol=rtol, atol=0,
                                   err_msg=f"rra {i} cdp_prep")
        np.testing.assert_allclose(a["rows"], b["rows"], rtol=rtol, atol=0,
                                   err_msg=f"rra {i} rows")


def fed_store(rrd_id: str, t0: int, dss: list[DataSource], updates, **create) -> RRDStore:
    """Our store with one RRD created at ``t0`` and fed ``updates`` one by one."""
    store = RRDStore()
    store.create(rrd_id, t0, **create)
    for d in dss:
        store.add_ds(rrd_id, d)
    for t, vals in updates:
        store.update(rrd_id, t, vals)
    return store
