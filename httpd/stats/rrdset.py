"""The host's RRD set: the :class:`rrd.engine.RRDStore`, one tick per collection, the files
under ``<data_dir>/rrd`` (dump XML, atomic with a daily backup, via :mod:`rrd.persist`) and a
cache of formatted archive rows for ``/rrd_updates``."""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping
from xml.sax.saxutils import escape

import numpy as np
from rrd import persist
from rrd.engine import CF, LAYOUT, RRDState, RRDStore, Xport
from rrd.errors import CorruptRRD, RRDUsageError
from rrd.numformat import format_rows

from .sources import DEFINITIONS

__all__ = ["RowCache", "Segment", "RRDSet", "ring_reach", "fill_rows", "row_batches", "warm_rows",
           "render_updates"]

log = logging.getLogger(__name__)


class RowCache:
    """The ``%.15g`` text of each RRD's archive rows, formatted once.

    A consolidated row at time ``t <= floor(last_update/span)*span`` never changes again (until
    the ring wraps, which gives it another ``t``), so a poll after a tick formats only the new
    row of each RRD. Values are joined with ``\\0``; XML and JSON differ only in what replaces
    that separator. Entries are keyed by the RRD's version, bumped on anything that rewrites
    history (restore, forget, a new data source).
    """

    SEP = b"\x00"
    VIEWS = 4   # whole-row texts kept for this many distinct polls (RRD set, level, format)

    def __init__(self) -> None:
        # rrd_id -> (rrd_id, version, cf, span) -> {t: text}; by RRD first, so that dropping one
        # (a VM starts or declares a data source) does not walk every RRD's tables
        self._rows: dict[str, dict[tuple[str, int, str, int], dict[int, bytes]]] = {}
        # (span, as_json, ((rrd_id, version, cf), ...)) -> {t: the row's document text};
        # joining 1,000 RRDs' pieces per row is most of a warm poll, so whole rows are kept too
        self._views: OrderedDict[tuple, dict[int, bytes]] = OrderedDict()
        self._view_rids: dict[tuple, frozenset[str]] = {}

    def drop(self, rid: str) -> None:
        self._rows.pop(rid, None)
        for k in [k for k, rids in self._view_rids.items() if rid in rids]:
            del self._views[k], self._view_rids[k]

    def expire(self, now: int, keep: Callable[[int], int]) -> None:
        """Forget rows older than ``keep(span)`` seconds (rows that left their ring)."""
        for tables, span_at in [*((per_rrd, 3) for per_rrd in self._rows.values()),
                                (self._views, 0)]:
            for key, rows in list(tables.items()):
                old = now - keep(key[span_at])
                stale = [t for t in list(rows) if t < old]   # a renderer may be adding
                for t in stale:
                    del rows[t]
                if not rows and tables is not self._views:
                    del tables[key]

    def nbytes(self) -> int:
        return sum(len(v) for tables in [*self._rows.values(), self._views]
                   for rows in tables.values() for v in rows.values())

    def view(self, key: tuple) -> dict[int, bytes]:
        """The whole-row table of one poll shape; the least recently used beyond VIEWS go."""
        table = self._views.pop(key, None)
        if table is None:
            table = {}
            self._view_rids[key] = frozenset(rid for rid, _, _ in key[2])
        self._views[key] = table
        while len(self._views) > self.VIEWS:
            old, _ = self._views.popitem(last=False)
            del self._view_rids[old]
        return table

    def table(self, key: tuple[str, int, str, int]) -> dict[int, bytes]:
        return self._rows.setdefault(key[0], {}).setdefault(key, {})

    def peek(self, key: tuple[str, int, str, int]) -> Mapping[int, bytes]:
        return self._rows.get(key[0], {}).get(key, {})


# --- the RRD set of this host -----------------------------------------------------------------

# Seconds of history each archive level keeps, by its row span (5 s x 120 = 600 s, ...).
_REACH = {a.pdp_per_row * LAYOUT.step: a.pdp_per_row * LAYOUT.step * a.rows
          for a in LAYOUT.archives}


def ring_reach(span: int) -> int:
    return _REACH.get(span, span * 400)


@dataclass(frozen=True)
class Segment:
    """Columns ``lo:hi`` of an Xport belong to one RRD and one CF."""
    rid: str
    cf: str
    lo: int
    hi: int


class RRDSet:
    """The host's RRDs: definitions, ticks, persistence files, rendering help. Loop-only."""

    def __init__(self, directory: Path | None) -> None:
        self.store = RRDStore()
        self.directory = directory
        self._gids: dict[str, dict[str, int]] = {}
        self.version: dict[str, int] = {}
        self.cache = RowCache()

    # -- identity and files --
    def path(self, rid: str) -> Path:
        assert self.directory is not None
        kind, _, uuid = rid.partition(":")
        return self.directory / f"{kind}-{uuid}.xml"

    def ids(self, kind: str) -> list[str]:
        prefix = kind + ":"
        return [r for r in self.store.rrd_ids() if r.startswith(prefix)]

    def _bump(self, rid: str) -> None:
        self.version[rid] = self.version.get(rid, 0) + 1
        self.cache.drop(rid)

    # -- creation --
    def create(self, rid: str, now: int, with_min_max: bool) -> None:
        self.store.create(rid, int(now), with_min_max=with_min_max)
        self._gids[rid] = {}
        self._bump(rid)

    def install(self, rid: str, state: RRDState) -> None:
        """A loaded RRD; its data sources are re-declared (metadata) at the next tick."""
        self.store.restore(rid, state)
        self._gids[rid] = {}
        self._bump(rid)

    def remove(self, rid: str) -> None:
        if rid in self.store:
            self.store.remove(rid)
        self._gids.pop(rid, None)
        self.version.pop(rid, None)
        self.cache.drop(rid)

    def forget(self, rid: str, name: str) -> None:
        self.store.forget(rid, name)
        self._bump(rid)

    # -- ticks --
    def _gid(self, rid: str, kind: str, name: str) -> int | None:
        gids = self._gids[rid]
        gid = gids.get(name)
        if gid is None:
            ds = DEFINITIONS[kind](name)
            if ds is None:
                return None
            try:
                gid = self.store.add_ds(rid, ds)
            except RRDUsageError:   # a file from another version defined it differently
                log.warning("%s: data source %s redefined; its history is dropped", rid, name)
                self.store.remove_ds(rid, name)
                gid = self.store.add_ds(rid, ds)
            gids[name] = gid
            self._bump(rid)
        return gid

    def tick(self, t: int, readings: dict[str, dict[str, float]]) -> int:
        """One update of every RRD at ``t``: ``readings[rrd_id][ds name]`` (missing: unknown).
        Data sources are declared on first sight. Returns the columns skipped as stale."""
        cols: list[int] = []
        vals: list[float] = []
        for rid, values in readings.items():
            if rid not in self._gids:
                continue
            kind = rid.partition(":")[0]
            gids = self._gids[rid]
            for name, v in values.items():
                gid = gids.get(name)
                if gid is None:
                    gid = self._gid(rid, kind, name)
                    if gid is None:
                        continue
                cols.append(gid)
                vals.append(v)
        return self.store.tick(int(t), np.array(cols, np.int64), np.array(vals, np.float64))

    # -- reading --
    def xport(self, rids: list[str], start: int, interval: int, cf: CF | None
              ) -> tuple[Xport, list[Segment]]:
        x = self.store.xport(rids, start, interval, cf)
        segments: list[Segment] = []
        lo = 0
        for rid, cfname, n in x.parts:
            if n:
                segments.append(Segment(rid, cfname, lo, lo + n))
            lo += n
        return x, segments

    def cache_plan(self, x: Xport, segments: list[Segment]) -> list[tuple[dict[int, bytes], int]]:
        """Per segment: its cache table and the newest row time that is final for it (rows
        after that, or before the ring's reach, are not cached)."""
        plan = []
        for seg in segments:
            own_end = self.store.last_update(seg.rid) // x.step * x.step
            if x.end != own_end:
                plan.append(({}, -1))   # behind the others: render plainly, cache nothing
                continue
            key = (seg.rid, self.version.get(seg.rid, 0), seg.cf, x.step)
            plan.append((self.cache.table(key), own_end))
        return plan

    def view_plan(self, x: Xport, segments: list[Segment],
                  plan: list[tuple[dict[int, bytes], int]], as_json: bool
                  ) -> tuple[dict[int, bytes], int]:
        """The whole-row table for this poll and the newest row time final for every segment
        (-1: some RRD is behind, nothing is kept)."""
        final = min((f for _, f in plan), default=-1)
        if final < 0:
            return {}, -1
        key = (x.step, as_json,
               tuple((seg.rid, self.version.get(seg.rid, 0), seg.cf) for seg in segments))
        return self.cache.view(key), final

    def warm_work(self, rids: Iterable[str], span: int, cf: str
                  ) -> list[tuple[Xport, list[Segment], list[tuple[dict[int, bytes], int]]]]:
        """What a poll of the whole ``span`` ring (cf ``cf``) would still have to format: xports
        of just the RRDs and rows missing from the cache, grouped by (first missing row, end).
        After a tick that is the newest row of every RRD; after a start, every row of them."""
        rows = ring_reach(span) // span
        groups: dict[tuple[int, int], list[str]] = {}
        for rid in rids:
            if rid not in self.store:
                continue
            layout = self.store.layout(rid)
            if not any(a.pdp_per_row * layout.step == span and a.cf.value == cf
                       for a in layout.archives):
                continue
            end = self.store.last_update(rid) // span * span
            table = self.cache.peek((rid, self.version.get(rid, 0), cf, span))
            oldest = end - (rows - 1) * span
            if oldest not in table:
                start = oldest
            else:
                k = 0
                while end - k * span not in table:
                    k += 1
                if k == 0:
                    continue
                start = end - (k - 1) * span
            groups.setdefault((start, end), []).append(rid)
        work = []
        for (start, end), group in groups.items():
            x, segments = self.xport(group, start, span, CF(cf))
            if x.end == end and x.step == span:
                work.append((x, segments, self.cache_plan(x, segments)))
        return work


# --- rendering rrd_updates with the row cache (runs in a worker thread) -----------------------

_SPECIAL_TEXT = {"nan": b"NaN", "inf": b"Infinity", "-inf": b"-Infinity", "0": b"0.0",
                 "-0": b"-0.0"}


def _fmt_slow(values: np.ndarray) -> bytes:
    out = []
    for v in values.tolist():
        s = "%.15g" % v
        out.append(_SPECIAL_TEXT.get(s) or s.encode())
    return RowCache.SEP.join(out)


def _row_pieces(block: np.ndarray) -> list[list[bytes]]:
    """Each row of ``block`` as its values' ``%.15g`` texts (one vectorised pass, exact
    per-value fallback for the rows that need it)."""
    texts, redo = format_rows(block, b"", b"", RowCache.SEP)
    return [(_fmt_slow(row) if r else t).split(RowCache.SEP)
            for row, t, r in zip(block, texts, redo.tolist())]


def fill_rows(x: Xport, segments: list[Segment],
              plan: list[tuple[dict[int, bytes], int]]) -> list[list[bytes]]:
    """Per row (newest first): per segment its text, from the cache or formatted now (and
    cached when final). Segments missing the same rows are formatted together in one numpy
    pass. Runs in a worker thread: tables are only added to, with whole values."""
    times = x.times.tolist()
    per_seg: list[list[bytes | None]] = []
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, (table, _) in enumerate(plan):
        got = [table.get(t) for t in times]
        per_seg.append(got)
        if None in got:
            groups.setdefault(tuple(i for i, g in enumerate(got) if g is None), []).append(j)
    sep = RowCache.SEP
    for missing, js in groups.items():
        cols = np.concatenate([np.arange(segments[j].lo, segments[j].hi) for j in js])
        pieces = _row_pieces(x.values[np.ix_(np.array(missing), cols)])
        widths = [segments[j].hi - segments[j].lo for j in js]
        for i, row in zip(missing, pieces):
            t = times[i]
            o = 0
            for j, w in zip(js, widths):
                text = sep.join(row[o:o + w])
                o += w
                per_seg[j][i] = text
                table, final = plan[j]
                if final >= 0 and t <= final:
                    table[t] = text
    return [list(row) for row in zip(*per_seg)] if per_seg else [[] for _ in times]


def row_batches(x: Xport, rows: int) -> Iterator[tuple[int, Xport]]:
    """``x`` a few rows at a time (first row index, sub-Xport): numpy passes over blocks that
    stay in the CPU caches are much faster than one pass over 1.5 M values."""
    for lo in range(0, x.values.shape[0], rows):
        yield lo, Xport(x.start, x.step, x.end - lo * x.step, x.legend, x.values[lo:lo + rows])


def warm_rows(x: Xport, segments: list[Segment], plan: list[tuple[dict[int, bytes], int]],
              batch_rows: int = 8) -> None:
    """Format and cache every row of ``x`` that is missing (worker thread)."""
    for _, sub in row_batches(x, batch_rows):
        fill_rows(sub, segments, plan)


def render_updates(x: Xport, segments: list[Segment],
                   plan: list[tuple[dict[int, bytes], int]], as_json: bool,
                   batch_rows: int = 8,
                   view: tuple[dict[int, bytes], int] = ({}, -1)) -> Iterator[bytes]:
    """The rrd_updates document (same bytes as rrd.render.xport_xml/json), row texts cached
    per RRD (``plan``) and as whole rows (``view``: table, newest final row time)."""
    rows = x.values.shape[0]
    legend, tail = _legend_text(tuple(x.legend), as_json)
    if as_json:
        yield (b'{"meta":{"start":"%d","step":"%d","end":"%d","rows":"%d","columns":"%d",'
               b'"legend":%s},"data":[' % (x.start, x.step, x.end, rows, len(x.legend), legend))
    else:
        yield (b'<?xml version="1.0" encoding="UTF-8"?>\n<xport><meta><start>%d</start>'
               b"<step>%d</step><end>%d</end><rows>%d</rows><columns>%d</columns>%s</meta>"
               b"<data>" % (x.start, x.step, x.end, rows, len(x.legend), legend))
    times = x.times.tolist()
    sep = b'","' if as_json else b"</v><v>"
    rows_done, final = view
    for lo, sub in row_batches(x, batch_rows):
        ts = times[lo:lo + sub.values.shape[0]]
        done = [rows_done.get(t) for t in ts]
        if None in done:
            done = []
            for t, segs in zip(ts, fill_rows(sub, segments, plan)):
                body = b""
                if segs:
                    body = sep.join(segs).replace(RowCache.SEP, sep)
                    body = b'"' + body + b'"' if as_json else b"<v>" + body + b"</v>"
                text = (b'{"t":"%d","values":[%s]}' if as_json else b"<row><t>%d</t>%s</row>"
                        ) % (t, body)
                done.append(text)
                if t <= final:
                    rows_done[t] = text
        yield (b"," if as_json and lo else b"") + (b"," if as_json else b"").join(done)
    yield tail


@lru_cache(maxsize=8)
def _legend_text(legend: tuple[str, ...], as_json: bool) -> tuple[bytes, bytes]:
    """The legend (13,000 escaped entries for 1,000 VMs) once per distinct legend."""
    if as_json:
        return json.dumps(list(legend), separators=(",", ":")).encode(), b"]}"
    return (b"<legend>" + "".join(f"<entry>{escape(e)}</entry>" for e in legend).encode()
            + b"</legend>", b"</data></xport>")


# --- the service -------------------------------------------------------------------------------

def _load_file(path: Path) -> RRDState | None:
    """A saved RRD, its backup when the file is bad, or None (missing, or both unusable)."""
    try:
        state, src = persist.load_or_backup(path)
    except FileNotFoundError:
        return None
    except CorruptRRD as e:
        log.error("statistics file %s is unreadable and has no usable backup (%s): "
                  "starting a new RRD; the bad file is kept as %s.corrupt", path, e.reason,
                  path.name)
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        return None
    if src != path:
        log.warning("statistics file %s is missing or corrupt: using its backup %s", path, src)
    return state


def _delete_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + persist.BACKUP_SUFFIX)):
        p.unlink(missing_ok=True)

