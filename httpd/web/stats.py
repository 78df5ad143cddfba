"""Statistics over HTTP: /rrd_updates, /host_rrd, /vm_rrd, /sr_rrd and the legacy /host_rrds,
/vm_rrds (reference: docs rrd-stats.md sections 3-4).

Credentials through http_session as every HTTP handler. Bad input is a 400 (missing or garbage
`start`, `interval`, `cf`, `uuid`), an unknown uuid a 404, before any byte is sent. Bodies are
streamed: the rows are gathered on the loop (the store is loop-only; the result is a copy), the
text is produced in a worker thread a batch at a time and written with `await resp.write()`,
whose wait is the backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from typing import Iterator

from aiohttp import web

from rrd.engine import CF
from rrd.render import JSON_CONTENT_TYPE, XML_CONTENT_TYPE, dump_json, dump_xml
from rrd.updates import Fresh, render_updates

from ..core.resident import elsewhere
from ..model.errors import XenAPIError
from ..stats.rrdset import load_file
from ..stats.service import StatsService
from ..stats.sources import SR, VM, rrd_id
from .auth import http_session
from .appkeys import SERVICES

__all__ = ["routes"]

log = logging.getLogger(__name__)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_BATCH = 1024 * 1024
_HEADERS = {"Cache-Control": "no-cache, no-store", "Access-Control-Allow-Origin": "*"}
_TRUE = ("true", "1", "yes", "on")


def routes() -> web.RouteTableDef:
    r = web.RouteTableDef()
    r.get("/rrd_updates")(rrd_updates)
    r.get("/host_rrd")(host_rrd)
    r.get("/vm_rrd")(vm_rrd)
    r.get("/sr_rrd")(sr_rrd)
    r.get("/host_rrds")(host_rrd)      # XenCenter's legacy paths: same documents
    r.get("/vm_rrds")(vm_rrd)
    return r


# --- parameters -------------------------------------------------------------------------------

def _bad(name: str, value: str) -> XenAPIError:
    return XenAPIError("INVALID_VALUE", name, value[:80])


def _int_param(request: web.Request, name: str, default: int | None) -> int:
    text = request.query.get(name)
    if text is None or (text == "" and default is not None):
        if default is None:
            raise _bad(name, "")
        return default
    try:
        v = float(text.strip())
    except ValueError:
        raise _bad(name, text) from None
    if not math.isfinite(v) or abs(v) > 2**62:
        raise _bad(name, text)
    return int(v)


def _uuid(text: str, name: str = "uuid") -> str:
    if not _UUID.match(text.strip()):
        raise _bad(name, text)
    return text.strip().lower()


def _wants_json(request: web.Request) -> bool:
    """As xcp-rrdd: the `json` key present (whatever its value), or an Accept asking for it."""
    return "json" in request.query or "application/json" in request.headers.get("Accept", "")


# --- streaming --------------------------------------------------------------------------------

def _take(chunks: Iterator[bytes]) -> bytes | None:
    """Up to ~1 MiB of the next chunks (worker thread); None at the end."""
    out: list[bytes] = []
    size = 0
    for c in chunks:
        out.append(c)
        size += len(c)
        if size >= _BATCH:
            break
    return b"".join(out) if out else None


async def _stream(request: web.Request, chunks: Iterator[bytes], as_json: bool
                  ) -> web.StreamResponse:
    resp = web.StreamResponse(headers={
        **_HEADERS, "Content-Type": JSON_CONTENT_TYPE if as_json else XML_CONTENT_TYPE})
    loop = asyncio.get_running_loop()
    first = await loop.run_in_executor(request.app[SERVICES].executors.stats, _take, chunks)   # errors before any byte: a status
    await resp.prepare(request)
    try:
        data = first
        while data is not None:
            await resp.write(data)
            data = await loop.run_in_executor(request.app[SERVICES].executors.stats, _take, chunks)
        await resp.write_eof()
    except ConnectionError:                # the client went away: nothing to answer
        log.debug("%s: client went away", request.path)
    except Exception:  # noqa: BLE001 - headers are out: log and cut the stream
        log.exception("%s: rendering failed mid-stream", request.path)
        if request.transport is not None:
            request.transport.close()
    return resp


# --- handlers ---------------------------------------------------------------------------------

async def rrd_updates(request: web.Request) -> web.StreamResponse:
    async with http_session(request):
        services = request.app[SERVICES]
        service = services.stats
        q = request.query
        start = _int_param(request, "start", None)
        interval = _int_param(request, "interval", 0)
        if interval < 0:
            raise _bad("interval", q["interval"])
        cf = None
        if q.get("cf"):
            try:
                cf = CF(q["cf"].upper())
            except ValueError:
                raise _bad("cf", q["cf"]) from None
        rids: list[str] = []
        if q.get("host", "").lower() in _TRUE:
            rids.append(service.host_rid)
        # as xapi: no vm_uuid (sr_uuid) means every VM (SR); each one given keeps that RRD
        # if it exists; `none` or an unknown uuid keeps nothing (Xen Orchestra sends `none`)
        for kind, key in ((VM, "vm_uuid"), (SR, "sr_uuid")):
            wanted = q.getall(key, [])
            if not wanted:
                rids.extend(service.rrds.ids(kind))
                continue
            for u in wanted:
                rid = rrd_id(kind, u.strip().lower())
                if _UUID.match(u.strip()) and rid in service.store and rid not in rids:
                    rids.append(rid)
        x, segments = service.rrds.xport(rids, start, interval, cf)
        service.asked(x.step, {s.cf for s in segments})
        plan = service.rrds.cache_plan(x, segments)
        as_json = _wants_json(request)
        view = service.rrds.view_plan(x, segments, plan, as_json)
        fresh: Fresh = []
        try:
            return await _stream(request, render_updates(x, segments, plan, as_json,
                                                         view=view, fresh=fresh), as_json)
        finally:
            service.rrds.cache.keep(fresh)   # here, on the loop: the cache has one writer


async def _dump(request: web.Request, service: StatsService, rid: str) -> web.StreamResponse:
    as_json = _wants_json(request)
    if rid in service.store:
        state = service.store.export(rid)
    else:                                   # a halted VM: its saved file
        state = await asyncio.get_running_loop().run_in_executor(
            service.executor, load_file, service.rrds.path(rid))
        if state is None:
            raise XenAPIError("HANDLE_INVALID", "RRD", rid)
    return await _stream(request, (dump_json if as_json else dump_xml)(state), as_json)


async def host_rrd(request: web.Request) -> web.StreamResponse:
    async with http_session(request):
        services = request.app[SERVICES]
        service = services.stats
        return await _dump(request, service, service.host_rid)


async def _object_rrd(request: web.Request, cls: str, kind: str) -> web.StreamResponse:
    async with http_session(request):
        services = request.app[SERVICES]
        service = services.stats
        uuid = _uuid(request.query.get("uuid", ""))
        ref = services.store.ref_of_uuid(cls, uuid)          # unknown: UUID_INVALID -> 404
        if cls == "VM":
            origin = elsewhere(services.store, services.store.get(cls, ref),
                               host_ref=services.host.host_ref,
                               base_url=services.locations.base_url())
            if origin is not None:      # its RRD lives on the host it runs on
                raise web.HTTPFound(f"{origin}{request.path}?{request.query_string}")
        return await _dump(request, service, rrd_id(kind, uuid))


async def vm_rrd(request: web.Request) -> web.StreamResponse:
    return await _object_rrd(request, "VM", VM)


async def sr_rrd(request: web.Request) -> web.StreamResponse:
    return await _object_rrd(request, "SR", SR)
