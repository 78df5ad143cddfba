"""Round-robin databases for every RRD of a host, held as numpy columns.

Storage grammar (written once, here)::

    store   := group per Layout
    group   := per-column state + per archive (cdp state, rows x columns ring)
    RRD     := id ("host:<uuid>", "vm:<uuid>", "sr:<uuid>") + data sources,
               each data source owning one column of its layout's group
    row slot for consolidated time T in archive a := (T // (a.pdp_per_row*step)) % a.rows

One column is one data source; a tick updates every column of every RRD
with a few array operations.  Consolidation follows rrdtool 1.7.2 exactly
(PDP building across step boundaries, ``unknown_sec``, the split of an open
left PDP when an update closes several, xff, cdp_prep), so results can be
checked against the ``rrdtool`` CLI.  Pure: no I/O, no clock; callers pass
``now``/timestamps (integer seconds).  The values it takes and gives (data sources,
layouts, states, Xport) are :mod:`rrd.model`'s, re-exported here.

Usage::

    store = RRDStore()
    store.create("host:H", now, with_min_max=True)
    c = store.add_ds("host:H", DataSource("cpu_avg", DSType.GAUGE, 0.0, 1.0))
    store.tick(now + 5, np.array([c]), np.array([0.25]))   # all RRDs at once
    store.update("host:H", now + 10, [0.5])                 # one RRD, DS order
    x = store.xport(["host:H"], start=now - 600)            # rows for /rrd_updates
    state = store.export("host:H")                          # for dump/persist
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import RRDUsageError, StaleUpdate, UnknownRRD
from .model import (DS_TYPE_CODE, HEARTBEAT, LAYOUT, LAYOUT_MIN_MAX, NAN, STEP, CF, Archive,
                    ArchiveState, DataSource, DSState, DSType, Layout, RRDState, Xport)

__all__ = [
    "STEP", "HEARTBEAT", "CF", "DSType", "Archive", "Layout", "LAYOUT", "LAYOUT_MIN_MAX",
    "DataSource", "DSState", "ArchiveState", "RRDState", "Xport", "RRDStore",
]

_INF = float("inf")


# --- consolidation functions, looked up by CF ----------------------------------

@dataclass(frozen=True)
class _Fold:
    """How one CF folds PDPs into a CDP, as rrdtool's update_cdp does."""

    empty: float  # carry-over after a CDP closes on a boundary
    close: Callable[[np.ndarray, np.ndarray, int, int, np.ndarray], np.ndarray]
    add: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (cv, pdp, pdp*n), pdp known
    carry: Callable[[np.ndarray, int], np.ndarray]  # pdp known, `into` > 0 PDPs


def _nan_to(a: np.ndarray, v: float) -> np.ndarray:
    return np.where(np.isnan(a), v, a)


_FOLDS: dict[CF, _Fold] = {
    CF.AVERAGE: _Fold(
        0.0,
        lambda cv, x, off, p, unk: (_nan_to(cv, 0.0) + _nan_to(x, 0.0) * off) / (p - unk),
        lambda cv, x, xn: _nan_to(cv, 0.0) + xn,
        lambda x, into: x * into,
    ),
    CF.MIN: _Fold(
        _INF,
        lambda cv, x, off, p, unk: np.minimum(_nan_to(cv, _INF), _nan_to(x, _INF)),
        lambda cv, x, xn: np.fmin(cv, x),  # x known; a NaN cv takes x
        lambda x, into: x,
    ),
    CF.MAX: _Fold(
        -_INF,
        lambda cv, x, off, p, unk: np.maximum(_nan_to(cv, -_INF), _nan_to(x, -_INF)),
        lambda cv, x, xn: np.fmax(cv, x),
        lambda x, into: x,
    ),
}

_AVERAGE = _FOLDS[CF.AVERAGE]

Sel = slice | np.ndarray


class _Group:
    """Columns of every RRD sharing one layout; arrays grow geometrically."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.cap = 0
        self.free: list[int] = []  # freed columns, reused before growing
        self.used = 0  # columns ever handed out (high-water mark)
        n = len(layout.archives)
        self.last_up = np.zeros(0, np.int64)
        self.last_ds = np.zeros(0)
        self.pdp_value = np.zeros(0)
        self.unknown_sec = np.zeros(0)
        self.type_code = np.zeros(0, np.int8)
        self.ds_min = np.zeros(0)
        self.ds_max = np.zeros(0)
        self.heartbeat = np.zeros(0)
        self.gid = np.zeros(0, np.int64)  # global id per column, -1 when free
        self.cdp = [np.zeros((4, 0)) for _ in range(n)]  # primary, secondary, value, unknown
        self.rows = [np.zeros((a.rows, 0)) for a in layout.archives]
        self.folds = [_FOLDS[a.cf] for a in layout.archives]

    # -- allocation ------------------------------------------------------------

    def _grow(self, need: int) -> None:
        # +1/8 (at least 64 columns): copies stay rare (amortised O(1) per column added, about
        # one per 100 VMs at 1,000 VMs) and spare capacity stays within 1/8 of the store,
        # where doubling would leave up to half of it unused.
        cap = max(self.cap + max(64, self.cap // 8), need)

        def grow1(a: np.ndarray, fill: float) -> np.ndarray:
            b = np.full(a.shape[:-1] + (cap,), fill, a.dtype)
            b[..., : self.cap] = a
            return b

        for name, fill in (("last_up", 0), ("last_ds", NAN), ("pdp_value", NAN),
                           ("unknown_sec", 0.0), ("type_code", 0), ("ds_min", NAN),
                           ("ds_max", NAN), ("heartbeat", HEARTBEAT), ("gid", -1)):
            setattr(self, name, grow1(getattr(self, name), fill))
        self.cdp = [grow1(c, NAN) for c in self.cdp]
        self.rows = [grow1(r, NAN) for r in self.rows]
        self.cap = cap

    def allocate(self) -> int:
        if self.free:
            return self.free.pop()
        if self.used == self.cap:
            self._grow(self.used + 1)
        self.used += 1
        return self.used - 1

    def release(self, col: int) -> None:
        self.gid[col] = -1
        self.free.append(col)

    def reset(self, col: int, ds: DataSource, last_up: int) -> None:
        """Fresh state for a data source, as ``rrdtool create`` at ``last_up``."""
        step = self.layout.step
        self.last_up[col] = last_up
        self.last_ds[col] = NAN
        self.pdp_value[col] = NAN
        self.unknown_sec[col] = last_up % step
        self.type_code[col] = DS_TYPE_CODE[ds.type]
        self.ds_min[col] = ds.min
        self.ds_max[col] = ds.max
        self.heartbeat[col] = ds.heartbeat
        for a, cdp, rows in zip(self.layout.archives, self.cdp, self.rows):
            cdp[0:2, col] = 0.0
            cdp[2, col] = NAN
            cdp[3, col] = ((last_up - last_up % step) % (step * a.pdp_per_row)) // step
            rows[:, col] = NAN

    # -- update (rrdtool's process_arg for columns sharing one last_up) ---------

    def advance(self, sel: Sel, t: int, last: int, v: np.ndarray) -> None:
        step = self.layout.step
        interval = t - last
        is_gauge = self.type_code[sel] == 0
        is_derive = self.type_code[sel] == 1
        hb = self.heartbeat[sel]
        diff = v - self.last_ds[sel]
        pdp_new = np.where(is_gauge, v * interval, np.where(is_derive, diff, v))
        rate = np.where(is_gauge, v, pdp_new / interval)
        bad = (hb < interval) | (rate < self.ds_min[sel]) | (rate > self.ds_max[sel])
        pdp_new[bad] = NAN
        self.last_ds[sel] = v

        proc_st = last - last % step
        occu_st = t - t % step
        elapsed = (occu_st - proc_st) // step
        if elapsed == 0:
            unk = np.isnan(pdp_new)
            self.unknown_sec[sel] += np.where(unk, math.floor(interval), 0)
            pv = self.pdp_value[sel]
            self.pdp_value[sel] = np.where(unk, pv, np.where(np.isnan(pv), pdp_new, pv + pdp_new))
        else:
            pre_int = occu_st - last
            proc_cnt = proc_st // step
            open_sec = pre_int % step
            if elapsed > 1 and open_sec > 0:
                # rrdtool 1.7.2 closes the open left PDP on its own first.
                open_new = pdp_new * open_sec / interval
                pdp_new = pdp_new - open_new
                self._close(sel, open_sec, open_sec, 0, 1, proc_cnt, open_new, last + open_sec, hb)
                interval -= open_sec
                pre_int -= open_sec
                elapsed -= 1
                proc_cnt += 1
            self._close(sel, interval, pre_int, t % step, elapsed, proc_cnt, pdp_new, t, hb)
        self.last_up[sel] = t

    def _close(self, sel: Sel, interval: int, pre_int: int, post_int: int, elapsed: int,
               proc_cnt: int, pdp_new: np.ndarray, now: int, hb: np.ndarray) -> None:
        """Close ``elapsed`` PDPs, fold them into every archive, write rows."""
        step = self.layout.step
        unk = np.isnan(pdp_new)
        pv = self.pdp_value[sel]
        us = self.unknown_sec[sel]
        pv = np.where(unk, pv, _nan_to(pv, 0.0) + pdp_new / interval * pre_int)
        pre_unknown = np.where(unk, float(pre_int), 0.0)
        dead = (hb < interval) | (step / 2.0 < us)
        pdp_temp = np.where(dead, NAN, pv / ((elapsed * step - us) - pre_unknown))
        self.unknown_sec[sel] = np.where(unk, math.floor(post_int), 0)
        self.pdp_value[sel] = np.where(unk, NAN, pdp_new / interval * post_int)

        x_unk = np.isnan(pdp_temp)
        any_unk = bool(x_unk.any())
        x_known = ~x_unk if any_unk else None  # None: every PDP known, no masks needed
        xn = pdp_temp * elapsed
        in_place = isinstance(sel, slice)  # a slice gives views: no write-back
        for a, fold, cdp, rows in zip(self.layout.archives, self.folds, self.cdp, self.rows):
            p = a.pdp_per_row
            start_off = p - proc_cnt % p
            count = min((elapsed - start_off) // p + 1, a.rows) if start_off <= elapsed else 0
            c = cdp[:, sel]
            prim, sec, cv, unkn = c[0], c[1], c[2], c[3]
            if p == 1:  # rrdtool: primary (and secondary) are the PDP itself
                prim[...] = pdp_temp
                if elapsed >= 2:
                    sec[...] = pdp_temp
            elif count:
                unkn += np.where(x_unk, start_off, 0)
                sec[...] = pdp_temp
                closed = fold.close(cv, pdp_temp, start_off, p, unkn)
                prim[...] = np.where(unkn > p * a.xff, NAN, closed)
                into = (elapsed - start_off) % p
                if into == 0:
                    cv.fill(fold.empty)
                else:
                    cv[...] = np.where(x_unk, fold.empty, fold.carry(pdp_temp, into))
                unkn[...] = np.where(x_unk, float(into), 0.0)
            else:
                if any_unk:
                    np.add(unkn, elapsed, out=unkn, where=x_unk)
                if fold is _AVERAGE and not np.isnan(cv).any():
                    np.add(cv, xn, out=cv, where=x_known if any_unk else True)
                else:
                    np.copyto(cv, fold.add(cv, pdp_temp, xn), where=x_known if any_unk else True)
            if not in_place:
                cdp[:, sel] = c
            if count:
                span = p * step
                newest = now // span
                for k in range(count):
                    slot = (newest - (count - 1 - k)) % a.rows
                    rows[slot, sel] = prim if k == 0 else sec


@dataclass
class _RRD:
    rrd_id: str
    group: _Group
    data_sources: list[DataSource]
    cols: list[int]  # local columns in the group, DS order
    gids: list[int]  # global column ids, DS order
    idle_last_up: int  # last update while the RRD has no data source
    legends: dict[str, list[str]] = field(default_factory=dict)  # cf -> xport legend entries

    def legend(self, cf: str) -> list[str]:
        """``CF:rrd_id:ds`` per data source, kept until the data sources change (an xport of
        1,000 RRDs would otherwise format 13,000 strings per poll)."""
        entries = self.legends.get(cf)
        if entries is None:
            entries = self.legends[cf] = [f"{cf}:{self.rrd_id}:{d.name}"
                                          for d in self.data_sources]
        return entries

    def index(self, name: str) -> int:
        for i, d in enumerate(self.data_sources):
            if d.name == name:
                return i
        raise UnknownRRD(f"{self.rrd_id} has no data source {name!r}")


class RRDStore:
    """Every RRD of the host.  Global column ids address data sources in ticks."""

    def __init__(self) -> None:
        self._groups: dict[Layout, _Group] = {}
        self._rrds: dict[str, _RRD] = {}
        self._gid_group: list[_Group | None] = []
        self._gid_col = np.zeros(0, np.int64)
        self._gid_free: list[int] = []

    # -- RRDs and data sources ---------------------------------------------------

    def create(self, rrd_id: str, now: int, *, with_min_max: bool = False,
               layout: Layout | None = None) -> None:
        """A new empty RRD whose last update is ``now`` (like rrdtool --start)."""
        if rrd_id in self._rrds:
            raise RRDUsageError(f"RRD {rrd_id!r} already exists")
        if not isinstance(rrd_id, str) or not rrd_id or any(c in rrd_id for c in "<>&\"'"):
            raise RRDUsageError(f"invalid RRD id {rrd_id!r}")
        layout = layout or (LAYOUT_MIN_MAX if with_min_max else LAYOUT)
        group = self._groups.get(layout) or self._groups.setdefault(layout, _Group(layout))
        self._rrds[rrd_id] = _RRD(rrd_id, group, [], [], [], int(now))

    def __contains__(self, rrd_id: str) -> bool:
        return rrd_id in self._rrds

    def rrd_ids(self) -> list[str]:
        return list(self._rrds)

    def _get(self, rrd_id: str) -> _RRD:
        try:
            return self._rrds[rrd_id]
        except KeyError:
            raise UnknownRRD(f"no RRD {rrd_id!r}") from None

    def last_update(self, rrd_id: str) -> int:
        r = self._get(rrd_id)
        return int(r.group.last_up[r.cols[0]]) if r.cols else r.idle_last_up

    def layout(self, rrd_id: str) -> Layout:
        return self._get(rrd_id).group.layout

    def data_sources(self, rrd_id: str) -> list[DataSource]:
        return list(self._get(rrd_id).data_sources)

    def add_ds(self, rrd_id: str, ds: DataSource) -> int:
        """Add a data source (unknown history); returns its global column id.

        Re-adding an existing name with the same definition only updates the
        metadata (units, description), so a collector can declare its data
        sources after an RRD was loaded from disk.
        """
        r = self._get(rrd_id)
        for i, old in enumerate(r.data_sources):
            if old.name == ds.name:
                if not old.same_definition(ds):
                    raise RRDUsageError(f"{rrd_id}: {ds.name} exists with another definition")
                r.data_sources[i] = ds
                return r.gids[i]
        col = r.group.allocate()
        r.group.reset(col, ds, self.last_update(rrd_id))
        gid = self._new_gid(r.group, col)
        r.data_sources.append(ds)
        r.legends.clear()
        r.cols.append(col)
        r.gids.append(gid)
        return gid

    def _new_gid(self, group: _Group, col: int) -> int:
        if self._gid_free:
            gid = self._gid_free.pop()
            self._gid_group[gid] = group
        else:
            gid = len(self._gid_group)
            self._gid_group.append(group)
            if gid >= len(self._gid_col):
                grown = np.full(max(16, 2 * len(self._gid_col)), -1, np.int64)
                grown[: len(self._gid_col)] = self._gid_col
                self._gid_col = grown
        self._gid_col[gid] = col
        group.gid[col] = gid
        return gid

    def _drop(self, r: _RRD, i: int) -> None:
        gid, col = r.gids.pop(i), r.cols.pop(i)
        r.data_sources.pop(i)
        r.legends.clear()
        r.group.release(col)
        self._gid_group[gid] = None
        self._gid_col[gid] = -1
        self._gid_free.append(gid)

    def remove_ds(self, rrd_id: str, name: str) -> None:
        r = self._get(rrd_id)
        r.idle_last_up = self.last_update(rrd_id)
        self._drop(r, r.index(name))

    def remove(self, rrd_id: str) -> None:
        r = self._get(rrd_id)
        while r.cols:
            self._drop(r, len(r.cols) - 1)
        del self._rrds[rrd_id]

    def columns(self, rrd_id: str) -> np.ndarray:
        """Global column ids of the RRD's data sources, in DS order."""
        return np.array(self._get(rrd_id).gids, np.int64)

    def forget(self, rrd_id: str, name: str) -> None:
        """Reset one data source's archives and PDP state (forget_data_source_archives)."""
        r = self._get(rrd_id)
        i = r.index(name)
        r.group.reset(r.cols[i], r.data_sources[i], self.last_update(rrd_id))

    # -- updates -------------------------------------------------------------------

    def tick(self, t: int, cols: np.ndarray, values: np.ndarray) -> int:
        """Update every data source of every RRD at time ``t``.

        ``values[i]`` is the reading for global column ``cols[i]`` (NaN =
        unknown); columns not listed get an unknown reading.  RRDs whose last
        update is not before ``t`` are left alone; returns how many columns
        were skipped that way.
        """
        t = int(t)
        buf = np.full(len(self._gid_col) + 1, NAN)
        buf[np.asarray(cols, np.int64)] = values
        skipped = 0
        with np.errstate(all="ignore"):
            for g in self._groups.values():
                if g.used == 0:
                    continue
                v = buf[g.gid[: g.used]]  # free columns read the trailing NaN
                lu = g.last_up[: g.used]
                first = int(lu[0])
                if (lu == first).all():
                    if first < t:
                        g.advance(slice(0, g.used), t, first, v)
                    else:
                        skipped += int((g.gid[: g.used] >= 0).sum())
                    continue
                for last in np.unique(lu).tolist():
                    sel = np.flatnonzero(lu == last)
                    if last < t:
                        g.advance(sel, t, int(last), v[sel])
                    else:
                        skipped += int((g.gid[sel] >= 0).sum())
        return skipped

    def update(self, rrd_id: str, t: int, values: Sequence[float] | Mapping[str, float]) -> None:
        """Update one RRD (DS order, or by name with missing names unknown)."""
        r = self._get(rrd_id)
        if isinstance(values, Mapping):
            unknown = set(values) - {d.name for d in r.data_sources}
            if unknown:
                raise UnknownRRD(f"{rrd_id} has no data source(s) {sorted(unknown)}")
            values = [values.get(d.name, NAN) for d in r.data_sources]
        v = np.array(values, dtype=np.float64).reshape(-1)
        if len(v) != len(r.cols):
            raise RRDUsageError(f"{rrd_id}: {len(v)} values for {len(r.cols)} data sources")
        last = self.last_update(rrd_id)
        if int(t) <= last:
            raise StaleUpdate(f"{rrd_id}: update time {t} is not after last update {last}")
        if not r.cols:
            r.idle_last_up = int(t)
            return
        with np.errstate(all="ignore"):
            r.group.advance(np.array(r.cols, np.int64), int(t), last, v)

    # -- reading -----------------------------------------------------------------

    @staticmethod
    def _slots(a: Archive, step: int, times: np.ndarray) -> np.ndarray:
        return (times // (a.pdp_per_row * step)) % a.rows

    def fetch(self, rrd_id: str, archive: int) -> tuple[int, int, np.ndarray]:
        """(end, step, rows newest first x DS) of one archive of one RRD."""
        r = self._get(rrd_id)
        layout = r.group.layout
        a = layout.archives[archive]
        span = a.pdp_per_row * layout.step
        end = self.last_update(rrd_id) // span * span
        times = end - span * np.arange(a.rows, dtype=np.int64)
        slots = self._slots(a, layout.step, times)
        return end, span, r.group.rows[archive][np.ix_(slots, r.cols)]

    def latest(self, rrd_id: str, name: str) -> float:
        """Newest value of the finest AVERAGE archive (query_data_source)."""
        r = self._get(rrd_id)
        i = r.index(name)
        layout = r.group.layout
        k = min((j for j, a in enumerate(layout.archives) if a.cf is CF.AVERAGE),
                key=lambda j: layout.archives[j].pdp_per_row)
        end, _, rows = self.fetch(rrd_id, k)
        return float(rows[0, i])

    def xport(self, rrd_ids: Iterable[str], start: int, interval: int = 0,
              cf: CF | None = None, now: int = 0) -> Xport:
        """Choose the archive level for /rrd_updates and gather its rows.

        The level is the first one (archive order, after the ``cf`` filter)
        with ``pdp_per_row >= interval/step`` whose span reaches back to
        ``start``, else the coarsest.  A negative ``start`` is relative to the
        newest last update (``now``, the caller's clock, when no RRD is
        selected).  Legend: per RRD, per archive of that level (AVERAGE, MIN,
        MAX), per data source.
        """
        rrds = [self._get(i) for i in rrd_ids]
        lasts = [self.last_update(r.rrd_id) for r in rrds]
        last = max(lasts, default=now)
        if start < 0:
            start = last + start
        step = rrds[0].group.layout.step if rrds else STEP
        candidates: list[tuple[int, int]] = []  # (pdp_per_row, rows) in archive order
        for r in rrds:
            for a in r.group.layout.archives:
                if (cf is None or a.cf is cf) and (a.pdp_per_row, a.rows) not in candidates:
                    candidates.append((a.pdp_per_row, a.rows))
        if not candidates:
            return Xport(start, step, last, [], np.zeros((0, 0)))
        pick = max(candidates, key=lambda c: c[0])
        for pdp, nrows in candidates:
            if pdp * step >= interval and last - start <= pdp * nrows * step:
                pick = (pdp, nrows)
                break
        pdp, nrows = pick
        span = pdp * step
        end = last // span * span
        n = 0 if end < start else min(nrows, (end - start) // span + 1)
        times = end - span * np.arange(n, dtype=np.int64)
        legend: list[str] = []
        parts: list[tuple[str, str, int]] = []
        # Consecutive RRDs reading the same (group, archive) are gathered at once.
        segments: list[tuple[_Group, int, list[int], list[int]]] = []
        for r, own_last in zip(rrds, lasts):
            for k, a in enumerate(r.group.layout.archives):
                if a.pdp_per_row != pdp or (cf is not None and a.cf is not cf):
                    continue
                legend.extend(r.legend(a.cf.value))
                parts.append((r.rrd_id, a.cf.value, len(r.cols)))
                if not segments or segments[-1][:2] != (r.group, k):
                    segments.append((r.group, k, [], []))
                segments[-1][2].extend(r.cols)
                segments[-1][3].extend([own_last // span * span] * len(r.cols))
        blocks = []
        for g, k, cols, own_ends in segments:
            a = g.layout.archives[k]
            block = g.rows[k][np.ix_(self._slots(a, step, times), cols)]
            own_end = np.array(own_ends, np.int64)
            if (own_end != end).any():  # an RRD behind the others: no stale ring rows
                ok = (times[:, None] <= own_end) & (times[:, None] > own_end - nrows * span)
                block[~ok] = NAN
            blocks.append(block)
        values = np.hstack(blocks) if blocks else np.zeros((n, 0))
        return Xport(start, span, end, legend, values, parts)

    # -- whole-RRD state for dump and persistence ----------------------------------

    def export(self, rrd_id: str) -> RRDState:
        r = self._get(rrd_id)
        g = r.group
        cols = np.array(r.cols, np.int64)
        last = self.last_update(rrd_id)
        ds = [DSState(float(g.last_ds[c]), float(g.pdp_value[c]), int(g.unknown_sec[c]))
              for c in r.cols]
        archives = []
        for k, a in enumerate(g.layout.archives):
            span = a.pdp_per_row * g.layout.step
            end = last // span * span
            times = end - span * np.arange(a.rows - 1, -1, -1, dtype=np.int64)
            c = g.cdp[k][:, cols]
            archives.append(ArchiveState(a, c[0].copy(), c[1].copy(), c[2].copy(), c[3].copy(),
                                         g.rows[k][np.ix_(self._slots(a, g.layout.step, times), cols)]))
        return RRDState(g.layout, last, list(r.data_sources), ds, archives)

    def restore(self, rrd_id: str, state: RRDState) -> None:
        """Install an exported/loaded RRD under ``rrd_id`` (replacing none)."""
        self.create(rrd_id, state.last_update, layout=state.layout)
        r = self._rrds[rrd_id]
        g = r.group
        for ds in state.data_sources:
            self.add_ds(rrd_id, ds)
        cols = np.array(r.cols, np.int64)
        g.last_ds[cols] = [d.last_ds for d in state.ds]
        g.pdp_value[cols] = [d.value for d in state.ds]
        g.unknown_sec[cols] = [d.unknown_sec for d in state.ds]
        for k, (a, st) in enumerate(zip(state.layout.archives, state.archives)):
            g.cdp[k][:, cols] = np.stack((st.primary, st.secondary, st.value, st.unknown))
            span = a.pdp_per_row * state.layout.step
            end = state.last_update // span * span
            times = end - span * np.arange(a.rows - 1, -1, -1, dtype=np.int64)
            g.rows[k][np.ix_(self._slots(a, state.layout.step, times), cols)] = st.rows

    # -- accounting ---------------------------------------------------------------

    def columns_in_use(self) -> tuple[int, int]:
        """(data sources stored, columns allocated) over all layouts."""
        used = sum(g.used - len(g.free) for g in self._groups.values())
        return used, sum(g.cap for g in self._groups.values())

    def nbytes(self) -> int:
        """Bytes held by the store's arrays (capacity included)."""
        total = self._gid_col.nbytes
        for g in self._groups.values():
            total += sum(a.nbytes for a in (g.last_up, g.last_ds, g.pdp_value, g.unknown_sec,
                                            g.type_code, g.ds_min, g.ds_max, g.heartbeat, g.gid))
            total += sum(c.nbytes for c in g.cdp) + sum(r.nbytes for r in g.rows)
        return total
