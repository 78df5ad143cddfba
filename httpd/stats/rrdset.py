"""The host's RRD set: the :class:`rrd.engine.RRDStore`, one tick per collection, the files
under ``<data_dir>/rrd`` (dump XML, atomic with a daily backup, via :mod:`rrd.persist`) and a
cache of formatted archive rows for ``/rrd_updates``."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from rrd import persist
from rrd.engine import CF, LAYOUT, RRDState, RRDStore, Xport
from rrd.errors import CorruptRRD, RRDUsageError
from rrd.updates import Plan, RowCache, Segment

from .sources import DEFINITIONS

__all__ = ["RRDSet", "ring_reach", "load_file", "delete_files"]

log = logging.getLogger(__name__)


# --- the RRD set of this host -----------------------------------------------------------------

# Seconds of history each archive level keeps, by its row span (5 s x 120 = 600 s, ...).
_REACH = {a.pdp_per_row * LAYOUT.step: a.pdp_per_row * LAYOUT.step * a.rows
          for a in LAYOUT.archives}


def ring_reach(span: int) -> int:
    return _REACH.get(span, span * 400)


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
        """Rows of `rids` since `start` (negative: that many seconds before the newest
        update, or before now when nothing is selected, such as a halted VM)."""
        x = self.store.xport(rids, start, interval, cf, now=int(time.time()))
        segments: list[Segment] = []
        lo = 0
        for rid, cfname, n in x.parts:
            if n:
                segments.append(Segment(rid, cfname, lo, lo + n))
            lo += n
        return x, segments

    def cache_plan(self, x: Xport, segments: list[Segment]) -> Plan:
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
                  plan: Plan, as_json: bool
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
                  ) -> list[tuple[Xport, list[Segment], Plan]]:
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


# --- the service -------------------------------------------------------------------------------

def load_file(path: Path) -> RRDState | None:
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


def delete_files(path: Path) -> None:
    """The backup first: once the file is gone, so is everything of it (no backup that a
    later load could fall back on)."""
    for p in (path.with_name(path.name + persist.BACKUP_SUFFIX), path):
        p.unlink(missing_ok=True)

