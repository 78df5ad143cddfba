"""The one ``/rrd_updates`` renderer (xport XML and JSON), sans-IO, with a cache of row texts.

A document is a generator of ``bytes`` chunks (a few rows each), so a caller can stream it with
backpressure and never hold a large response.  Numbers are ``%.15g`` with rrd_updates' special
spellings (:func:`rrd.render.format_value`: ``0.0``, ``NaN``, ``Infinity``, ``-Infinity``);
JSON carries every number as a string.

Formatting is the cost of a poll (1.4 M values for 1,000 VMs' 5 s ring), and a consolidated row
never changes once it is final, so the texts are cached: per RRD (:class:`RowCache` tables, one
per RRD, version, CF and span) and as whole rows per poll shape (views).  The renderer may run
in a worker thread; it only reads the cache.  The texts it makes that are worth keeping go to a
``fresh`` list, which the cache's owner passes to :meth:`RowCache.keep` on its own thread, so
the cache has one writer.

:func:`xport_xml` and :func:`xport_json` are the same renderer without a cache.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator, Mapping
from xml.sax.saxutils import escape

import numpy as np

from .engine import Xport
from .numformat import format_rows
from .render import format_value

__all__ = ["RowCache", "Segment", "Plan", "Fresh", "fill_rows", "row_batches", "warm_rows",
           "render_updates", "xport_xml", "xport_json", "whole"]

# What is cached where: (table, newest final row time) per segment; -1 keeps nothing.
Plan = list[tuple[dict[int, bytes], int]]
# Texts made by a render that its cache should keep: (table, row time, text).
Fresh = list[tuple[dict[int, bytes], int, bytes]]


class RowCache:
    """The ``%.15g`` text of each RRD's archive rows, formatted once.

    A consolidated row at time ``t <= floor(last_update/span)*span`` never changes again (until
    the ring wraps, which gives it another ``t``), so a poll after a tick formats only the new
    row of each RRD. Values are joined with ``\\0``; XML and JSON differ only in what replaces
    that separator. Entries are keyed by the RRD's version, bumped on anything that rewrites
    history (restore, forget, a new data source). Every method runs on the owner's thread;
    renderers elsewhere only read tables and hand back what to :meth:`keep`.
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

    def keep(self, fresh: Fresh) -> None:
        """Store the texts a render made (a table dropped meanwhile just goes with them)."""
        for table, t, text in fresh:
            table[t] = text

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
                for t in [t for t in rows if t < old]:
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


@dataclass(frozen=True)
class Segment:
    """Columns ``lo:hi`` of an Xport belong to one RRD and one CF."""
    rid: str
    cf: str
    lo: int
    hi: int


def whole(x: Xport) -> tuple[list[Segment], Plan]:
    """``x`` as one segment with nothing cached: the plain document."""
    n = len(x.legend)
    return ([Segment("", "", 0, n)], [({}, -1)]) if n else ([], [])


# --- formatting -------------------------------------------------------------------------------

def _fmt_slow(values: np.ndarray) -> bytes:
    return RowCache.SEP.join(format_value(v).encode() for v in values.tolist())


def _row_pieces(block: np.ndarray) -> list[list[bytes]]:
    """Each row of ``block`` as its values' ``%.15g`` texts (one vectorised pass, exact
    per-value fallback for the rows that need it)."""
    texts, redo = format_rows(block, b"", b"", RowCache.SEP)
    return [(_fmt_slow(row) if r else t).split(RowCache.SEP)
            for row, t, r in zip(block, texts, redo.tolist())]


def fill_rows(x: Xport, segments: list[Segment], plan: Plan, fresh: Fresh
              ) -> list[list[bytes]]:
    """Per row (newest first): per segment its text, from the cache or formatted now (and put
    in ``fresh`` when final). Segments missing the same rows are formatted together in one
    numpy pass. Reads the tables only."""
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
                    fresh.append((table, t, text))
    return [list(row) for row in zip(*per_seg)] if per_seg else [[] for _ in times]


def row_batches(x: Xport, rows: int) -> Iterator[tuple[int, Xport]]:
    """``x`` a few rows at a time (first row index, sub-Xport): numpy passes over blocks that
    stay in the CPU caches are much faster than one pass over 1.5 M values."""
    for lo in range(0, x.values.shape[0], rows):
        yield lo, Xport(x.start, x.step, x.end - lo * x.step, x.legend, x.values[lo:lo + rows])


def warm_rows(x: Xport, segments: list[Segment], plan: Plan, batch_rows: int = 8) -> Fresh:
    """Format every row of ``x`` that is missing from the cache; returns them to keep."""
    fresh: Fresh = []
    for _, sub in row_batches(x, batch_rows):
        fill_rows(sub, segments, plan, fresh)
    return fresh


# --- documents --------------------------------------------------------------------------------

def render_updates(x: Xport, segments: list[Segment], plan: Plan, as_json: bool,
                   batch_rows: int = 8, view: tuple[dict[int, bytes], int] = ({}, -1),
                   fresh: Fresh | None = None) -> Iterator[bytes]:
    """The rrd_updates document of ``x``, row texts read from the cache per RRD (``plan``) and
    as whole rows (``view``: table, newest final row time); new final texts go to ``fresh``."""
    fresh = [] if fresh is None else fresh
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
            for t, segs in zip(ts, fill_rows(sub, segments, plan, fresh)):
                body = b""
                if segs:
                    body = sep.join(segs).replace(RowCache.SEP, sep)
                    body = b'"' + body + b'"' if as_json else b"<v>" + body + b"</v>"
                text = (b'{"t":"%d","values":[%s]}' if as_json else b"<row><t>%d</t>%s</row>"
                        ) % (t, body)
                done.append(text)
                if t <= final:
                    fresh.append((rows_done, t, text))
        yield (b"," if as_json and lo else b"") + (b"," if as_json else b"").join(done)
    yield tail


def xport_xml(x: Xport) -> Iterator[bytes]:
    """The rrd_updates XML of ``x``, nothing cached."""
    return render_updates(x, *whole(x), as_json=False)


def xport_json(x: Xport) -> Iterator[bytes]:
    """The rrd_updates JSON of ``x`` (``json=true``), nothing cached."""
    return render_updates(x, *whole(x), as_json=True)


@lru_cache(maxsize=8)
def _legend_text(legend: tuple[str, ...], as_json: bool) -> tuple[bytes, bytes]:
    """The legend (13,000 escaped entries for 1,000 VMs) once per distinct legend."""
    if as_json:
        return json.dumps(list(legend), separators=(",", ":")).encode(), b"]}"
    return (b"<legend>" + "".join(f"<entry>{escape(e)}</entry>" for e in legend).encode()
            + b"</legend>", b"</data></xport>")
