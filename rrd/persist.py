"""Saving and loading RRDs as rrdtool dump XML (the SDK guide's on-disk form).

Saves are atomic (temp file in the same directory, fsync, rename, fsync of
the directory) and keep a daily backup next to the file (``<path>.bak``,
refreshed when older than a day by the caller's ``now``).  Loads use a
hardened lxml parser (no DTD, no entities, no network) and validate the
whole tree; anything wrong raises :class:`CorruptRRD` carrying the path.
:func:`load_or_backup` falls back to the backup, as xapi uses the last
saved version when the newest cannot be read.

Blocking file I/O: callers on an event loop run these in an executor.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from lxml import etree

from .engine import (CF, Archive, ArchiveState, DataSource, DSState, DSType, Layout,
                     RRDState)
from .errors import CorruptRRD, RRDUsageError
from .render import dump_xml

__all__ = ["BACKUP_SUFFIX", "BACKUP_AGE", "save", "load", "load_or_backup", "parse_dump",
           "sweep_temporaries"]

BACKUP_SUFFIX = ".bak"
BACKUP_AGE = 86400

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=True,
                          remove_pis=True)


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written file behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def sweep_temporaries(directory: str | os.PathLike) -> list[str]:
    """Remove what saves cut short by a crash (`kill -9`) left: `.<name>.<pid>.tmp`. Call it at
    start, before any save; returns the names removed."""
    removed = []
    with os.scandir(directory) as entries:
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".tmp") and e.is_file(
                    follow_symlinks=False):
                os.unlink(e.path)
                removed.append(e.name)
    return sorted(removed)


def save(path: str | os.PathLike, state: RRDState, now: int) -> None:
    """Write ``state`` to ``path`` atomically; refresh the daily backup."""
    path = Path(path)
    _write_atomic(path, dump_xml(state))
    bak = path.with_name(path.name + BACKUP_SUFFIX)
    try:
        due = now - bak.stat().st_mtime >= BACKUP_AGE
    except FileNotFoundError:
        due = True
    if due:
        with open(path, "rb") as src:
            _write_atomic(bak, iter(lambda: src.read(1 << 20), b""))
        os.utime(bak, (now, now))


def load(path: str | os.PathLike) -> RRDState:
    """Read one dump file; raises :class:`CorruptRRD` (with the path) if bad."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptRRD(str(path), f"cannot read: {e}") from e
    return parse_dump(data, str(path))


def load_or_backup(path: str | os.PathLike) -> tuple[RRDState, Path]:
    """Load ``path``, or its backup when it is missing or corrupt.

    Returns the state and the file it came from; re-raises the original
    error when the backup cannot be used either.
    """
    path = Path(path)
    try:
        return load(path), path
    except (CorruptRRD, FileNotFoundError) as first:
        bak = path.with_name(path.name + BACKUP_SUFFIX)
        try:
            return load(bak), bak
        except (CorruptRRD, FileNotFoundError):
            raise first from None


# --- parsing -------------------------------------------------------------------

class _Reader:
    """Typed access to the dump tree; every failure names the file."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, reason: str) -> CorruptRRD:
        return CorruptRRD(self.where, reason)

    def text(self, el: etree._Element, tag: str) -> str:
        child = el.find(tag)
        if child is None:
            raise self.fail(f"<{el.tag}> lacks <{tag}>")
        return (child.text or "").strip()

    def number(self, el: etree._Element, tag: str) -> float:
        return self.float_of(self.text(el, tag), tag)

    def float_of(self, s: str, what: str) -> float:
        if s in ("U", "NaN", "nan"):
            return math.nan
        try:
            return float(s)
        except ValueError:
            raise self.fail(f"<{what}> is not a number: {s[:40]!r}") from None

    def integer(self, el: etree._Element, tag: str) -> int:
        s = self.text(el, tag)
        try:
            return int(s)
        except ValueError:
            raise self.fail(f"<{tag}> is not an integer: {s[:40]!r}") from None


def parse_dump(data: bytes, where: str = "<memory>") -> RRDState:
    """Parse dump XML (ours or rrdtool's) into an :class:`RRDState`."""
    rd = _Reader(where)
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as e:
        raise rd.fail(f"not well-formed XML: {e}") from None
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and (list(dtd.iterentities()) or list(dtd.iterelements())):
        # rrdtool's own dumps name an external DTD (never fetched); declarations
        # inside the document are only ever an entity attack.
        raise rd.fail("DOCTYPE declarations are not allowed")
    if root.tag != "rrd":
        raise rd.fail(f"root element is <{root.tag}>, not <rrd>")
    step = rd.integer(root, "step")
    last_update = rd.integer(root, "lastupdate")
    dss: list[DataSource] = []
    pdp: list[DSState] = []
    try:
        for el in root.findall("ds"):
            try:
                typ = DSType(rd.text(el, "type"))
            except ValueError:
                raise rd.fail(f"unsupported data source type {rd.text(el, 'type')!r}") from None
            dss.append(DataSource(rd.text(el, "name"), typ, rd.number(el, "min"),
                                  rd.number(el, "max"),
                                  heartbeat=rd.integer(el, "minimal_heartbeat")))
            pdp.append(DSState(rd.number(el, "last_ds"), rd.number(el, "value"),
                               rd.integer(el, "unknown_sec")))
        archives: list[Archive] = []
        states: list[ArchiveState] = []
        for el in root.findall("rra"):
            try:
                cf = CF(rd.text(el, "cf"))
            except ValueError:
                raise rd.fail(f"unsupported consolidation {rd.text(el, 'cf')!r}") from None
            params = el.find("params")
            if params is None:
                raise rd.fail("<rra> lacks <params>")
            cdp_el, db = el.find("cdp_prep"), el.find("database")
            if cdp_el is None or db is None:
                raise rd.fail("<rra> lacks <cdp_prep> or <database>")
            cdp = cdp_el.findall("ds")
            if len(cdp) != len(dss):
                raise rd.fail(f"cdp_prep has {len(cdp)} entries for {len(dss)} data sources")
            rows = [[rd.float_of((v.text or "").strip(), "v") for v in row.findall("v")]
                    for row in db.findall("row")]
            if not rows or any(len(r) != len(dss) for r in rows):
                raise rd.fail("database rows do not match the data sources")
            a = Archive(cf, rd.integer(el, "pdp_per_row"), len(rows), rd.number(params, "xff"))
            archives.append(a)
            cols = [[rd.number(d, k) for d in cdp]
                    for k in ("primary_value", "secondary_value", "value")]
            unknown = [rd.integer(d, "unknown_datapoints") for d in cdp]
            states.append(ArchiveState(a, *(np.array(c, float) for c in cols),
                                       np.array(unknown, float), np.array(rows, float)))
        return RRDState(Layout(tuple(archives), step), last_update, dss, pdp, states)
    except RRDUsageError as e:  # values the engine refuses: bad input, not our bug
        raise rd.fail(str(e)) from None

