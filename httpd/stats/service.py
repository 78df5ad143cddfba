"""Performance statistics of this host: the collector and the host's RRD set.

Three layers, each usable on its own:

* readings: pure functions turning what the machine (``/proc``) and the domain backend
  (``DomainCounters``) say into ``{data source name: value}`` (:class:`ProcReader`,
  :func:`vm_readings`, :func:`dom0_readings`);
* :class:`RRDSet`: the :class:`rrd.engine.RRDStore` of this host, the data source
  definitions, one ``RRDStore.tick`` per collection, files under ``<data_dir>/rrd`` (dump XML,
  atomic with a daily backup, via :mod:`rrd.persist`) and a cache of formatted archive rows
  for ``/rrd_updates``;
* :class:`StatsService`: the agent's wiring: a collector task every ``stats_interval`` seconds
  on integer timestamps, loads/saves/deletes following VM start/stop/destroy
  (``Lifecycle.vm_events``), periodic and shutdown saves, legacy ``host_metrics``/``VM_metrics``,
  and after each tick the formatting of the rows pollers will ask for (``warm``), so that an
  ``/rrd_updates`` poll only joins cached text.

RRD ids: ``host:<uuid>``, ``vm:<uuid>`` (the control domain included), ``sr:<uuid>``; legends
come out as ``AVERAGE:vm:<uuid>:cpu0``. The store is only touched on the event loop; file work
and rendering run in executors on copies (``RRDStore.export``/``xport`` return copies).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
import datetime as _dt
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping
from xml.sax.saxutils import escape

import numpy as np

from rrd import persist
from rrd.engine import CF, LAYOUT, DataSource, DSType, RRDState, RRDStore, Xport
from rrd.errors import CorruptRRD, RRDUsageError
from rrd.numformat import format_rows

from ..backends.base import DomainBackend, DomainCounters
from ..core.bootstrap import ThisHost
from ..core.jobs import run_soon
from ..model.errors import XenAPIError
from ..model.store import Store
from ..model.xtypes import NULL_REF

__all__ = ["ProcReader", "vm_readings", "dom0_readings", "RRDSet", "StatsService",
           "host_ds", "vm_ds", "sr_ds", "HOST", "VM", "SR", "rrd_id", "RowCache",
           "render_updates", "invalid_data_source"]

log = logging.getLogger(__name__)

NAN = math.nan
INF = math.inf
HOST, VM, SR = "host", "vm", "sr"
_DEMAND_TTL = 900.0   # seconds an rrd_updates shape stays warm after its last poll
_BAD_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


def rrd_id(kind: str, uuid: str) -> str:
    return f"{kind}:{uuid}"


# --- data source definitions (one place; metadata is what get_data_sources shows) ----------

def _gauge(name: str, units: str, desc: str, lo: float = 0.0, hi: float = NAN) -> DataSource:
    return DataSource(name, DSType.GAUGE, lo, hi, units, desc)


def _derive(name: str, units: str, desc: str) -> DataSource:
    return DataSource(name, DSType.DERIVE, 0.0, NAN, units, desc)


_HOST_FIXED = {d.name: d for d in (
    _gauge("cpu_avg", "(fraction)", "Average physical CPU usage", 0.0, 1.0),
    _gauge("loadavg", "(fraction)", "Domain0 loadavg"),
    _gauge("memory_total_kib", "KiB", "Total amount of memory"),
    _gauge("memory_free_kib", "KiB", "Free memory (MemFree)"),
    _gauge("xapi_memory_usage_kib", "KiB", "Memory used by the agent (RSS)"),
    _gauge("xapi_open_fds", "count", "Open file descriptors of the agent"),
    _gauge("pool_session_count", "count", "Sessions open on this host"),
    _gauge("pool_task_count", "count", "Tasks on this host"),
    _derive("pif_aggr_rx", "B/s", "Bytes per second received on all physical interfaces"),
    _derive("pif_aggr_tx", "B/s", "Bytes per second sent on all physical interfaces"),
)}
_VM_FIXED = {d.name: d for d in (
    _gauge("memory", "B", "Memory currently allocated to the VM"),
    _gauge("memory_target", "B", "Target of the VM's balloon driver"),
    _gauge("memory_internal_free", "KiB", "Memory free as the guest reports it"),
)}
_SR_FIXED = {d.name: d for d in (
    DataSource("read", DSType.ABSOLUTE, 0.0, NAN, "B/s", "Bytes per second read from the SR"),
    DataSource("write", DSType.ABSOLUTE, 0.0, NAN, "B/s", "Bytes per second written to the SR"),
)}
_CPU = re.compile(r"cpu(\d+)\Z")
_PIF = re.compile(r"pif_(.+)_(rx|tx)\Z")
_VIF = re.compile(r"vif_(.+)_(rx|tx)\Z")
_VBD = re.compile(r"vbd_(.+)_(read|write)\Z")


@lru_cache(maxsize=4096)
def host_ds(name: str) -> DataSource | None:
    """The definition of a host data source by name (None: not one of ours)."""
    if name in _HOST_FIXED:
        return _HOST_FIXED[name]
    if m := _CPU.match(name):
        return _gauge(name, "(fraction)", f"Physical CPU {m[1]} usage", 0.0, 1.0)
    if m := _PIF.match(name):
        way = "received on" if m[2] == "rx" else "sent on"
        return _derive(name, "B/s", f"Bytes per second {way} physical interface {m[1]}")
    return None


@lru_cache(maxsize=4096)
def vm_ds(name: str) -> DataSource | None:
    if name in _VM_FIXED:
        return _VM_FIXED[name]
    if m := _CPU.match(name):
        return _gauge(name, "(fraction)", f"CPU{m[1]} usage", 0.0, 1.0)
    if m := _VIF.match(name):
        way = "received on" if m[2] == "rx" else "sent on"
        return _derive(name, "B/s", f"Bytes per second {way} virtual interface {m[1]}")
    if m := _VBD.match(name):
        return _derive(name, "B/s", f"Bytes per second {m[2]} on device {m[1]}")
    return None


def sr_ds(name: str) -> DataSource | None:
    return _SR_FIXED.get(name)


DEFINITIONS: dict[str, Callable[[str], DataSource | None]] = {HOST: host_ds, VM: vm_ds, SR: sr_ds}


def _safe(dev: str) -> str:
    return _BAD_NAME.sub("_", dev)


# --- readings --------------------------------------------------------------------------------

class ProcReader:
    """The host's readings from ``/proc``; CPU fractions from the previous sample's jiffies."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = Path(proc)
        self._jiffies: list[tuple[int, int]] | None = None   # (busy, total) per CPU, then all

    def _text(self, name: str) -> str:
        return (self.proc / name).read_text()

    def cpu_fractions(self) -> list[float]:
        """[cpu0, cpu1, ..., cpu_avg] as busy/total jiffies since the last call (NaN first)."""
        per: list[tuple[int, int]] = []
        total_line: tuple[int, int] | None = None
        for line in self._text("stat").splitlines():
            if not line.startswith("cpu"):
                continue
            name, *fields = line.split()
            v = [int(x) for x in fields[:8]]            # user nice system idle iowait irq soft steal
            busy_total = (sum(v) - v[3] - v[4], sum(v))
            if name == "cpu":
                total_line = busy_total
            else:
                per.append(busy_total)
        now = per + [total_line or (0, 0)]
        prev, self._jiffies = self._jiffies, now
        if prev is None or len(prev) != len(now):
            return [NAN] * len(now)
        out = []
        for (b0, t0), (b1, t1) in zip(prev, now):
            dt = t1 - t0
            out.append(min(1.0, max(0.0, (b1 - b0) / dt)) if dt > 0 else NAN)
        return out

    def meminfo(self) -> dict[str, int]:
        out = {}
        for line in self._text("meminfo").splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
        return out

    def net_dev(self) -> dict[str, tuple[int, int]]:
        out = {}
        for line in self._text("net/dev").splitlines()[2:]:
            name, _, rest = line.partition(":")
            f = rest.split()
            if len(f) >= 9:
                out[name.strip()] = (int(f[0]), int(f[8]))
        return out

    def own(self) -> tuple[int, int]:
        """(RSS KiB, open fds) of this process."""
        rss = 0
        for line in self._text("self/status").splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
        return rss, len(os.listdir(self.proc / "self" / "fd"))

    def readings(self, pifs: Iterable[str] | None = None) -> dict[str, float]:
        """Every host data source's value (DERIVE ones as raw counters). Blocking: run in an
        executor. ``pifs``: interface names to report (default: every one but ``lo``)."""
        r: dict[str, float] = {}
        cpus = self.cpu_fractions()
        for i, f in enumerate(cpus[:-1]):
            r[f"cpu{i}"] = f
        r["cpu_avg"] = cpus[-1]
        r["loadavg"] = float(self._text("loadavg").split()[0])
        mem = self.meminfo()
        r["memory_total_kib"] = float(mem.get("MemTotal", NAN))
        r["memory_free_kib"] = float(mem.get("MemFree", NAN))
        net = self.net_dev()
        wanted = [d for d in (pifs or ()) if d in net] or [d for d in net if d != "lo"]
        rx = tx = 0
        for dev in wanted:
            r[f"pif_{_safe(dev)}_rx"], r[f"pif_{_safe(dev)}_tx"] = net[dev]
            rx += net[dev][0]
            tx += net[dev][1]
        r["pif_aggr_rx"], r["pif_aggr_tx"] = float(rx), float(tx)
        rss, fds = self.own()
        r["xapi_memory_usage_kib"] = float(rss)
        r["xapi_open_fds"] = float(fds)
        return r


def vm_readings(c: DomainCounters, prev: tuple[float, tuple[float, ...]] | None,
                now: float) -> dict[str, float]:
    """A running VM's values from its domain counters; ``prev`` is (time, cpu_seconds) of the
    previous sample (CPU fractions need two samples)."""
    r: dict[str, float] = {}
    for i, secs in enumerate(c.cpu_seconds):
        frac = NAN
        if prev is not None and len(prev[1]) == len(c.cpu_seconds) and now > prev[0]:
            d = secs - prev[1][i]
            if d >= 0:
                frac = min(1.0, d / (now - prev[0]))
        r[f"cpu{i}"] = frac
    r["memory"] = float(c.memory)
    r["memory_target"] = float(c.memory_target)
    r["memory_internal_free"] = float(c.memory_internal_free)
    for dev, (rx, tx) in c.vif.items():
        r[f"vif_{_safe(dev)}_rx"] = float(rx)
        r[f"vif_{_safe(dev)}_tx"] = float(tx)
    for dev, (rd, wr) in c.vbd.items():
        r[f"vbd_{_safe(dev)}_read"] = float(rd)
        r[f"vbd_{_safe(dev)}_write"] = float(wr)
    return r


def dom0_readings(host: dict[str, float]) -> dict[str, float]:
    """The control domain is this machine: its vCPUs are the host's CPUs."""
    r = {k: v for k, v in host.items() if _CPU.match(k)}
    total, free = host.get("memory_total_kib", NAN), host.get("memory_free_kib", NAN)
    r["memory"] = r["memory_target"] = (total - free) * 1024
    r["memory_internal_free"] = free
    return r


# --- a cache of formatted archive rows (rrd_updates) ------------------------------------------

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


class StatsService:
    """The collector and the lifecycle of the host's RRD files (connected to ``Lifecycle.vm_events``)."""

    def __init__(self, store: Store, host: ThisHost, domains: DomainBackend, directory: Path, *,
                 interval: int = 5, save_interval: float = 3600.0, proc: str = "/proc",
                 executor: Executor | None = None) -> None:
        self.db = store
        self.host = host
        self.domains = domains
        self.executor = executor
        self.interval = max(1, int(interval))
        self.save_interval = save_interval
        self.rrds = RRDSet(directory)
        self.reader = ProcReader(proc)
        self._vm_prev: dict[str, tuple[float, tuple[float, ...]]] = {}
        self._vbd_prev: dict[tuple[str, str], tuple[int, int]] = {}
        self._failing: set[str] = set()
        self._chains: dict[str, asyncio.Task] = {}
        self._jobs: set[asyncio.Task] = set()
        self._collector: asyncio.Task | None = None
        self._last_legacy = 0
        self.ticks = 0
        # (span, cf) -> when /rrd_updates last asked for it (monotonic); the 5 s AVERAGE
        # level is always kept formatted, other levels while pollers ask for them.
        self._demand: dict[tuple[int, str], float] = {}
        self._warming: asyncio.Task | None = None

    @property
    def store(self) -> RRDStore:
        return self.rrds.store

    @property
    def host_rid(self) -> str:
        return rrd_id(HOST, self.db.get("host", self.host.host_ref)["uuid"])

    @property
    def dom0_uuid(self) -> str:
        return self.db.get("VM", self.host.dom0_ref)["uuid"]

    def _pool_min_max(self) -> bool:
        pools = self.db.all("pool")
        oc = next(iter(pools.values()))["other_config"] if pools else {}
        return oc.get("create_min_max_in_new_VM_RRDs", "").lower() in ("true", "1", "yes")

    # -- start / stop --
    async def start(self) -> None:
        self.rrds.directory.mkdir(parents=True, exist_ok=True)
        now = int(time.time())
        await self._load_or_create(self.host_rid, True, now)
        await self._load_or_create(rrd_id(VM, self.dom0_uuid), self._pool_min_max(), now)
        for uuid in self._resident_vms():
            self.vm_running(uuid)
        for uuid in self._local_srs():
            self._chain(rrd_id(SR, uuid), self._load_or_create(rrd_id(SR, uuid), False, now))
        self._collector = run_soon(self._collect_loop(), self._jobs)
        run_soon(self._save_loop(), self._jobs)

    async def stop(self) -> None:
        for t in list(self._jobs):
            if t not in self._chains.values():
                t.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.save_all()

    def _resident_vms(self) -> list[str]:
        out = []
        for rec in self.db.all("VM").values():
            if rec["is_control_domain"] or rec["power_state"] not in ("Running", "Paused"):
                continue
            if self.domains.get(rec["uuid"]) is not None:
                out.append(rec["uuid"])
        return out

    def _local_srs(self) -> list[str]:
        st = self.db
        return sorted({st.get("SR", p["SR"])["uuid"] for p in st.all("PBD").values()
                       if p["host"] == self.host.host_ref and st.find("SR", p["SR"])})

    # -- per-RRD file work, in order per RRD --
    def _chain(self, rid: str, coro) -> asyncio.Task:
        prev = self._chains.get(rid)

        async def run() -> None:
            if prev is not None:
                await asyncio.gather(prev, return_exceptions=True)
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - statistics must never take the service down
                log.exception("statistics: %s failed", rid)

        task = run_soon(run(), self._jobs)
        self._chains[rid] = task
        task.add_done_callback(lambda t: self._chains.get(rid) is t and self._chains.pop(rid))
        return task

    async def _load_or_create(self, rid: str, with_min_max: bool, now: int | None = None
                              ) -> None:
        if rid in self.store:
            return
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(self.executor, _load_file, self.rrds.path(rid))
        if rid in self.store:
            return
        if state is not None:
            try:
                self.rrds.install(rid, state)
                return
            except RRDUsageError as e:
                log.error("statistics file for %s cannot be used (%s): starting anew", rid, e)
                self.rrds.remove(rid)
        self.rrds.create(rid, int(now or time.time()), with_min_max)

    async def save(self, rid: str) -> None:
        if rid not in self.store:
            return
        state = self.store.export(rid)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, persist.save, self.rrds.path(rid), state, int(time.time()))

    async def _unload(self, rid: str) -> None:
        if rid not in self.store:
            return
        state = self.store.export(rid)
        self.rrds.remove(rid)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, persist.save, self.rrds.path(rid), state, int(time.time()))

    async def _destroy(self, rid: str) -> None:
        self.rrds.remove(rid)
        await asyncio.get_running_loop().run_in_executor(self.executor, _delete_files,
                                                         self.rrds.path(rid))

    async def save_all(self) -> None:
        await asyncio.gather(*list(self._chains.values()), return_exceptions=True)
        for rid in self.store.rrd_ids():
            try:
                await self.save(rid)
            except Exception:  # noqa: BLE001 - e.g. disk full: the last saved file stays
                log.exception("statistics: could not save %s", rid)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.save_interval)
            await self.save_all()

    # -- VMListener --
    def vm_running(self, uuid: str) -> None:
        self._chain(rrd_id(VM, uuid), self._load_or_create(rrd_id(VM, uuid),
                                                            self._pool_min_max()))

    def vm_stopped(self, uuid: str) -> None:
        self._forget_vm(uuid)
        self._chain(rrd_id(VM, uuid), self._unload(rrd_id(VM, uuid)))

    def vm_destroyed(self, uuid: str) -> None:
        self._forget_vm(uuid)
        self._chain(rrd_id(VM, uuid), self._destroy(rrd_id(VM, uuid)))

    def _forget_vm(self, uuid: str) -> None:
        self._vm_prev.pop(uuid, None)
        for k in [k for k in self._vbd_prev if k[0] == uuid]:
            del self._vbd_prev[k]

    # -- collection --
    async def _collect_loop(self) -> None:
        iv = self.interval
        while True:
            now = time.time()
            t = (int(now) // iv + 1) * iv
            # never a sample stamped in the future: the loop's timer may fire a little early,
            # and a poll's `start=now-600` must still reach back no further than the 5 s ring
            while (delay := t - time.time()) > 0:
                await asyncio.sleep(delay)
            try:
                await self.collect(int(t))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad tick must not end collection
                log.exception("statistics collection failed")

    def _pif_devices(self) -> list[str]:
        return [p["device"] for p in self.db.all("PIF").values()
                if p["host"] == self.host.host_ref]

    async def collect(self, t: int) -> None:
        """One collection at integer time ``t``: sample everything, one RRDStore.tick."""
        loop = asyncio.get_running_loop()
        host = await loop.run_in_executor(self.executor, self.reader.readings, self._pif_devices())
        st = self.db
        host["pool_session_count"] = float(len(st.all("session")))
        host["pool_task_count"] = float(len(st.all("task")))
        readings: dict[str, dict[str, float]] = {self.host_rid: host}
        dom0 = self.dom0_uuid
        readings[rrd_id(VM, dom0)] = dom0_readings(host)
        mono = time.monotonic()
        sr_io: dict[str, list[float]] = {}
        vbd_sr = self._vbd_srs()
        vm_values: dict[str, dict[str, float]] = {}
        for rid in self.rrds.ids(VM):
            uuid = rid[3:]
            if uuid == dom0:
                continue
            try:
                dom = self.domains.get(uuid)
                if dom is None:
                    continue
                c = dom.counters()
                values = vm_readings(c, self._vm_prev.get(uuid), mono)
                self._vm_prev[uuid] = (mono, tuple(c.cpu_seconds))
                for dev, (rd, wr) in c.vbd.items():
                    prev = self._vbd_prev.get((uuid, dev))
                    self._vbd_prev[(uuid, dev)] = (rd, wr)
                    sr = vbd_sr.get((uuid, dev))
                    if sr is None or prev is None:
                        continue
                    acc = sr_io.setdefault(sr, [0.0, 0.0])
                    acc[0] += max(0, rd - prev[0])
                    acc[1] += max(0, wr - prev[1])
            except Exception:  # noqa: BLE001 - one VM's failure leaves the others collected
                if uuid not in self._failing:
                    log.exception("statistics: collecting VM %s failed", uuid)
                    self._failing.add(uuid)
                continue
            self._failing.discard(uuid)
            readings[rid] = values
            vm_values[uuid] = values
        live_srs = set()
        for uuid in self._local_srs():
            rid = rrd_id(SR, uuid)
            live_srs.add(rid)
            if rid not in self.store and rid not in self._chains:
                self._chain(rid, self._load_or_create(rid, False))
            io = sr_io.get(uuid, [0.0, 0.0])
            readings[rid] = {"read": io[0], "write": io[1]}
        for rid in self.rrds.ids(SR):
            if rid not in live_srs and rid not in self._chains:
                self._chain(rid, self._destroy(rid))
        self.rrds.tick(t, readings)
        self.ticks += 1
        if self.ticks % 12 == 0:
            self.rrds.cache.expire(t, ring_reach)
        if self._warming is None or self._warming.done():
            self._warming = run_soon(self.warm(), self._jobs)
        self._legacy(t, host, vm_values)

    # -- keeping rrd_updates rows formatted --
    def asked(self, span: int, cfs: Iterable[str]) -> None:
        """An /rrd_updates poll read level ``span`` in ``cfs``: keep it warm for a while."""
        now = time.monotonic()
        for cf in cfs:
            self._demand[(span, cf)] = now

    async def warm(self) -> None:
        """Format the rows pollers will ask for, in a worker thread, right after a tick.

        Formatting is the cost of /rrd_updates (1.4 M values for 1,000 VMs' 5 s ring, ~0.6 s);
        done here, a poll only joins cached text. Cost: the text of each warm level (~30 MB
        for 1,000 VMs' 5 s level), kept only while its rows are in their ring."""
        now = time.monotonic()
        for key, asked in list(self._demand.items()):
            if now - asked > _DEMAND_TTL:
                del self._demand[key]
        shapes = [(LAYOUT.step, CF.AVERAGE.value)]
        shapes += [k for k in self._demand if k not in shapes]
        loop = asyncio.get_running_loop()
        for span, cf in shapes:
            for x, segments, plan in self.rrds.warm_work(self.store.rrd_ids(), span, cf):
                await loop.run_in_executor(self.executor, warm_rows, x, segments, plan)

    def _vbd_srs(self) -> dict[tuple[str, str], str]:
        """(VM uuid, device) -> SR uuid, for the SR read/write sums."""
        st = self.db
        out = {}
        for rid in self.rrds.ids(VM):
            uuid = rid[3:]
            try:
                vm = st.get("VM", st.ref_of_uuid("VM", uuid))
            except Exception:  # noqa: BLE001 - destroyed meanwhile
                continue
            for vbd in vm["VBDs"]:
                b = st.find("VBD", vbd)
                if not b or b["VDI"] == NULL_REF or not st.find("VDI", b["VDI"]):
                    continue
                sr = st.find("SR", st.get("VDI", b["VDI"])["SR"])
                if sr is not None:
                    out[(uuid, _safe(b["device"] or b["userdevice"]))] = sr["uuid"]
        return out

    def _legacy(self, t: int, host: dict[str, float], vms: dict[str, dict[str, float]]) -> None:
        """host_metrics/VM_metrics from the same samples, when rrd_update_interval asks."""
        st = self.db
        hrec = st.get("host", self.host.host_ref)
        mode = hrec["other_config"].get("rrd_update_interval", "")
        every = {"1": 5, "2": 60}.get(mode)
        if every is None or t // every == self._last_legacy // every:
            return
        self._last_legacy = t
        now = _dt.datetime.now(_dt.timezone.utc)

        def num(v: float) -> int:
            return 0 if math.isnan(v) else int(v)

        with st.transaction():
            if st.find("host_metrics", hrec["metrics"]) is not None:
                st.update("host_metrics", hrec["metrics"], {
                    "memory_total": num(host["memory_total_kib"]) * 1024,
                    "memory_free": num(host["memory_free_kib"]) * 1024, "last_updated": now})
            for uuid, v in vms.items():
                try:
                    rec = st.get("VM", st.ref_of_uuid("VM", uuid))
                except Exception:  # noqa: BLE001
                    continue
                if st.find("VM_metrics", rec["metrics"]) is None:
                    continue
                util = {k[3:]: (0.0 if math.isnan(x) else x) for k, x in v.items()
                        if _CPU.match(k)}
                st.update("VM_metrics", rec["metrics"], {
                    "VCPUs_utilisation": util, "memory_actual": num(v["memory"]),
                    "last_updated": now})

    # -- lookups for the API and HTTP --
    def rid_of(self, cls: str, ref: str) -> str:
        rec = self.db.get(cls, ref)
        kind = {"host": HOST, "VM": VM, "SR": SR}[cls]
        return rrd_id(kind, rec["uuid"])


def invalid_data_source(name: str) -> XenAPIError:
    """xapi's answer for an unknown data source name."""
    return XenAPIError("INTERNAL_ERROR", f'Rrd.Invalid_data_source("{name}")')
