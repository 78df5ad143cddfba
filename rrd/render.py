"""Number formats and rrdtool's dump (XML/JSON); ``/rrd_updates`` is :mod:`rrd.updates`.

Every renderer is a generator of ``bytes`` chunks (about one row each) so an
HTTP handler can stream it with backpressure and never hold a whole large
response.  Formats (reference: docs rrd-stats.md):

* rrd_updates numbers: ``%.15g``, zero as ``0.0``, ``NaN``, ``Infinity``,
  ``-Infinity``; JSON carries every number as a string.
* dump numbers: the shortest text that reads back to the same double (so
  dump -> load is exact), same special spellings; rows oldest first; the JSON
  dump is the same tree with every number a string.
"""

from __future__ import annotations

import json
import math
from typing import Iterator
from xml.sax.saxutils import escape

from .engine import ArchiveState, RRDState

__all__ = ["format_value", "format_exact", "dump_xml", "dump_json", "XML_CONTENT_TYPE",
           "JSON_CONTENT_TYPE"]

XML_CONTENT_TYPE = "text/xml"
JSON_CONTENT_TYPE = "application/json"

_SPECIAL = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity", "0": "0.0", "-0": "-0.0"}


def format_value(x: float) -> str:
    """One rrd_updates number: ``%.15g`` with the special spellings."""
    s = "%.15g" % x
    return _SPECIAL.get(s, s)


def format_exact(x: float) -> str:
    """A dump number: shortest round-trip text; NaN/Infinity spelled out."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return repr(float(x))


def _last_ds(v: float) -> str:
    """rrdtool keeps the raw reading; "U" when unknown, integers without ".0"
    so that rrdtool's DERIVE arithmetic accepts a restored file."""
    if math.isnan(v):
        return "U"
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return format_exact(v)


def _ds_fields(state: RRDState, i: int) -> list[tuple[str, str]]:
    d, s = state.data_sources[i], state.ds[i]
    return [("name", d.name), ("type", d.type.value), ("minimal_heartbeat", str(d.heartbeat)),
            ("min", format_exact(d.min)), ("max", format_exact(d.max)),
            ("last_ds", _last_ds(s.last_ds)), ("value", format_exact(s.value)),
            ("unknown_sec", str(int(s.unknown_sec)))]


def _cdp_fields(a: ArchiveState, i: int) -> list[tuple[str, str]]:
    return [("primary_value", format_exact(float(a.primary[i]))),
            ("secondary_value", format_exact(float(a.secondary[i]))),
            ("value", format_exact(float(a.value[i]))),
            ("unknown_datapoints", str(int(a.unknown[i])))]


def _head_fields(state: RRDState) -> list[tuple[str, str]]:
    return [("version", "0003"), ("step", str(state.layout.step)),
            ("lastupdate", str(int(state.last_update)))]


_CHUNK = 64 * 1024


def _chunked(parts: Iterator[str]) -> Iterator[bytes]:
    buf: list[str] = []
    size = 0
    for p in parts:
        buf.append(p)
        size += len(p)
        if size >= _CHUNK:
            yield "".join(buf).encode()
            buf, size = [], 0
    if buf:
        yield "".join(buf).encode()


def dump_xml(state: RRDState) -> Iterator[bytes]:
    """rrdtool's dump layout; ``rrdtool restore`` accepts it."""

    def leaves(fields: list[tuple[str, str]]) -> str:
        return "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields)

    def parts() -> Iterator[str]:
        yield '<?xml version="1.0" encoding="utf-8"?>\n<rrd>' + leaves(_head_fields(state)) + "\n"
        n = len(state.data_sources)
        for i in range(n):
            yield "<ds>" + leaves(_ds_fields(state, i)) + "</ds>\n"
        for a in state.archives:
            yield (f"<rra><cf>{a.archive.cf.value}</cf><pdp_per_row>{a.archive.pdp_per_row}"
                   f"</pdp_per_row><params><xff>{format_exact(a.archive.xff)}</xff></params>"
                   "<cdp_prep>" + "".join("<ds>" + leaves(_cdp_fields(a, i)) + "</ds>"
                                          for i in range(n)) + "</cdp_prep>\n<database>\n")
            for row in a.rows.tolist():
                yield "<row>" + "".join(f"<v>{format_exact(v)}</v>" for v in row) + "</row>\n"
            yield "</database></rra>\n"
        yield "</rrd>\n"

    return _chunked(parts())


def dump_json(state: RRDState) -> Iterator[bytes]:
    """The dump tree as JSON: ds, rra, cdp_prep and database are lists (a
    database row is a list of values), every number a string."""

    def obj(fields: list[tuple[str, str]]) -> str:
        return ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in fields)

    def parts() -> Iterator[str]:
        n = len(state.data_sources)
        yield "{" + obj(_head_fields(state)) + ',"ds":['
        yield ",".join("{" + obj(_ds_fields(state, i)) + "}" for i in range(n)) + '],"rra":['
        for k, a in enumerate(state.archives):
            yield (("," if k else "") + '{"cf":' + json.dumps(a.archive.cf.value)
                   + f',"pdp_per_row":"{a.archive.pdp_per_row}","params":{{"xff":'
                   + f'"{format_exact(a.archive.xff)}"}},"cdp_prep":['
                   + ",".join("{" + obj(_cdp_fields(a, i)) + "}" for i in range(n))
                   + '],"database":[')
            for j, row in enumerate(a.rows.tolist()):
                yield ("," if j else "") + "[" + ",".join(f'"{format_exact(v)}"' for v in row) + "]"
            yield "]}"
        yield "]}"

    return _chunked(parts())
