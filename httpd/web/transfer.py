"""HTTP VM import/export: /export, /export_metadata, /import, /import_metadata and raw VDIs.

Bytes stream both ways with bounded memory: an export is pulled from the xva writer in a
worker thread about 4 MiB a step, one step ahead of the socket writes, so a slow client
slows the disk reads; an import is read on the loop up to 8 MiB ahead of a worker, which
inflates and writes what arrived meanwhile (`transfer.ingest`), joined before anything rolls
back. Every path finishes its task: progress as bytes move, task.cancel honoured between
batches, a client that goes away fails the task, and a failed import removes what it created.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import urllib.parse
from pathlib import Path
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable, Iterator, Mapping, TypeVar

from aiohttp import web

from xva.errors import XVAError
from xva.events import LAYOUT_APPLIANCE, Metadata
from xva.files import export_appliance, export_blocks

from console_proxy.frontend import FRAMED_BY_CLOSE, FRAMING

from ..allocator import give_back_free_memory
from ..core.context import Ctx
from ..core.forwarding import home_of_sr, home_of_vm
from ..core.power import require
from ..core.resident import origin_of
from ..jobs import Ahead, Busy, joined
from ..model.errors import XenAPIError, internal_error
from ..model.xtypes import NULL_REF
from ..transfer.importer import ImportJob
from ..transfer.ingest import import_qcow2, import_raw, import_vhd, import_xva
from ..transfer.disks import qcow2_out, raw_out, vhd_out
from ..transfer.plan import appliance_for, block_export
from .auth import AUTHENTICATED, http_session
from .tasks import fenced_task_refusal
from .errors import abort as _abort
from .errors import error_response as _error
from .appkeys import SERVICES

__all__ = ["routes"]

log = logging.getLogger(__name__)

_TRUE = ("true", "1", "yes", "on")
# use_compression= (xapi's values) -> the block layout's whole-stream compression
_COMPRESSIONS = {"": None, "false": None, "true": "gzip", "gzip": "gzip", "zstd": "zstd"}


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in _TRUE


def _lookup(ctx: Ctx, cls: str, request: web.Request, ref_key: str, uuid_key: str) -> str:
    """A ref or uuid from the query (checked), or 400 if neither was given."""
    ref = request.query.get(ref_key)
    if ref:
        ctx.store.get(cls, ref)
        return ref
    uuid = request.query.get(uuid_key)
    if uuid:
        return ctx.store.ref_of_uuid(cls, uuid)
    raise XenAPIError("INVALID_VALUE", f"{ref_key}|{uuid_key}", "")


def _vdi_param(ctx: Ctx, request: web.Request) -> str:
    value = request.query.get("vdi", "")
    if value.startswith("OpaqueRef:"):
        ctx.store.get("VDI", value)
        return value
    if value:
        return ctx.store.ref_of_uuid("VDI", value)
    raise XenAPIError("INVALID_VALUE", "vdi", "")


_UNSURE = 2**50     # Xen Orchestra declares 1 PiB for a stream of unknown length


def _go_to(request: web.Request, ctx: Ctx, host: str | None) -> None:
    """In a pool: 302 to the host that holds what the request reads or writes (a VM's
    domain or disks, a local SR), with the same query; nothing when it is this one."""
    origin = origin_of(ctx.store, host, host_ref=ctx.host.host_ref,
                       base_url=ctx.services.locations.base_url())
    if origin is not None:
        raise web.HTTPFound(f"{origin}{request.path_qs}")


def _vdi_home(ctx: Ctx, vdi: str) -> str | None:
    return home_of_sr(ctx.store, ctx.store.get("VDI", vdi)["SR"])


def _is_probe(request: web.Request) -> bool:
    """Xen Orchestra's redirect probe before an upload: a PUT with no task_id and an empty
    body, declared as 0 bytes or as its 1 PiB "unknown length" (it then drops the answer).
    xapi answers every upload before reading it; we answer this one at once and touch
    nothing, so the probe neither waits for a body that never comes nor overwrites a VDI."""
    if request.cookies.get("task_id") or request.query.get("task_id"):
        return False
    n = request.content_length
    return n == 0 or (n is not None and n >= _UNSURE)


class _ClientGone(Exception):
    """The HTTP peer went away mid-transfer."""


T = TypeVar("T")


async def _opened(ctx: Ctx, make: Callable[[], T]) -> T:
    """Make an export's stream on a worker (spool files, open descriptors). If the client
    goes away meanwhile (the handler is cancelled), the worker still finishes; then what it
    made is closed at once instead of left behind."""
    fut = asyncio.ensure_future(ctx.streaming(make))
    try:
        return await joined(fut)
    except asyncio.CancelledError:
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            await joined(ctx.streaming(fut.result().close))
        raise


@asynccontextmanager
async def _task(request: web.Request, ctx: Ctx, label: str) -> AsyncIterator[str]:
    """The transfer's task (the client's `task_id` or our own), failed on every error path."""
    tasks = ctx.tasks
    task_id = request.cookies.get("task_id") or request.query.get("task_id")
    if task_id:
        refusal = await fenced_task_refusal(ctx.services, request[AUTHENTICATED], task_id)
        if refusal is not None:
            raise refusal
    else:
        task_id = tasks.create(label, session=ctx.session or NULL_REF)
    ctx.task = task_id
    try:
        yield task_id
    except XVAError as e:
        tasks.fail(task_id, XenAPIError(e.code, *e.params))
        raise XenAPIError(e.code, *e.params) from None
    except XenAPIError as e:
        tasks.fail(task_id, e)
        raise
    except (_ClientGone, ConnectionError) as e:
        tasks.fail(task_id, XenAPIError("VDI_IO_ERROR", f"the client went away: {e}"))
        raise
    except asyncio.CancelledError:
        gone = request.transport is None or request.transport.is_closing()
        tasks.fail(task_id, XenAPIError("VDI_IO_ERROR", "the client went away") if gone
                   else XenAPIError("TASK_CANCELLED", task_id))
        raise
    except Busy as e:
        busy = XenAPIError("TOO_BUSY", str(e))
        tasks.fail(task_id, busy)
        raise busy from None
    except Exception as e:  # noqa: BLE001 - the task must end; the middleware logs it
        err = internal_error(e)
        tasks.fail(task_id, err)
        if err.code != "INTERNAL_ERROR":       # a full disk: SR_FULL to the client too
            raise err from None
        raise
    finally:
        await ctx.store.sync()
        with contextlib.suppress(RuntimeError):     # no pool left: the agent is stopping
            await ctx.streaming(give_back_free_memory)


_BATCH = 4 << 20        # bytes of an export pulled in one worker step
# batches made ahead of the socket: one ahead, a worker waited on the loop's turn between
# batches (1 GiB random, xapi layout: 0.91 s against 0.71 s with 4; gzip 1.23 / 1.00 s)
_AHEAD = 4
_SMALL = 64 << 10       # pieces joined with their neighbours before they are written


def _take(pieces: Iterator[bytes]) -> list[bytes]:
    """The next pieces, about :data:`_BATCH` bytes of them ([] at the end): one thread hop
    per batch, not per piece (a hop costs a GIL hand-over between the loop and a worker).
    Runs of small pieces (tar headers, checksums) are joined, so a client sees few frames."""
    batch: list[bytes] = []
    small: list[bytes] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if len(piece) < _SMALL:
            small.append(piece)
        else:
            if small:
                batch.append(b"".join(small))
                small = []
            batch.append(piece)
        if size >= _BATCH:
            break
    if small:
        batch.append(b"".join(small))
    return batch


class _Body:
    """Writes a prepared response's body. aiohttp frames each chunk of a chunked body by
    joining its size line, the data and CRLF into one new bytes (on Python before 3.12.9,
    whose transports it does not trust with writelines): a copy of every byte sent, about a
    sixth of an uncompressed export's time. A chunked body's frames are written here as three
    transport writes instead, the data not copied unless the socket cannot take it at once;
    aiohttp still writes the head and, at write_eof, the last chunk (a compressed response is
    left to aiohttp whole)."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, writer) -> None:
        self.request = request
        self.writer = writer
        self.chunked = bool(getattr(writer, "chunked", False)) and not resp.compression
        if self.chunked:
            send_head = getattr(writer, "send_headers", None)   # aiohttp >= 3.12 holds it back
            if send_head is not None:
                send_head()

    async def write(self, piece: bytes) -> None:
        if not self.chunked:
            await self.writer.write(piece)
            return
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        if piece:
            head = b"%x\r\n" % len(piece)
            transport.write(head)
            transport.write(memoryview(piece))      # what the socket leaves: one copy, not two
            transport.write(b"\r\n")
            self.writer.output_size += len(head) + len(piece) + 2     # the access log's size
            await self.writer.drain()


async def _pump(request: web.Request, resp: web.StreamResponse, ctx: Ctx,
                pieces: Iterator[bytes], progress: Callable[[], float],
                cancel: Callable[[], None]) -> None:
    """Pull pieces on a transfer worker, write them with backpressure, follow the task.

    Up to :data:`_AHEAD` batches are made while earlier ones are written, so the disk, the
    compressor and the socket overlap without waiting on each other's turns; the worker
    making them is joined before this returns, so the caller may close the stream."""
    cancelled = ctx.tasks.cancel_event(ctx.task)
    body = _Body(request, resp, await resp.prepare(request))
    ahead = Ahead(ctx.streaming, functools.partial(_take, pieces), _AHEAD)
    try:
        while True:
            batch = await ahead.next()
            if not batch:
                return
            if cancelled.is_set():
                cancel()
                raise XenAPIError("TASK_CANCELLED", ctx.task)
            try:
                for piece in batch:
                    await body.write(piece)
            except ConnectionError as e:
                raise _ClientGone(str(e)) from None
            ctx.progress(progress())
    finally:
        await ahead.close()


def _stream_failed(request: web.Request, resp: web.StreamResponse | None, e: Exception,
                   task: str | None) -> web.StreamResponse:
    """An outgoing stream failed (its task already says why): an error page if nothing was
    sent yet, else a cut connection; a vanished client needs no answer at all."""
    if resp is not None and resp.prepared:
        _abort(request)
        return resp
    if isinstance(e, XenAPIError):
        return _error(e, task)
    raise e


# --- export ---------------------------------------------------------------------------------

def attachment(name: str, ext: str) -> str:
    """Content-Disposition naming the file after the VM (a browser saves it so): ASCII with
    the unsafe characters replaced, and the name itself in RFC 6266's filename*."""
    plain = re.sub(r"[^A-Za-z0-9._ -]+", "_", name).strip(" .") or "export"
    return (f'attachment; filename="{plain}.{ext}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name or 'export', safe='')}.{ext}")

async def export(request: web.Request) -> web.StreamResponse:
    return await _export(request, metadata_only=False)


async def export_metadata(request: web.Request) -> web.StreamResponse:
    return await _export(request, metadata_only=True)


async def _export(request: web.Request, *, metadata_only: bool) -> web.StreamResponse:
    services = request.app[SERVICES]
    async with http_session(request, "export") as session:
        ctx = Ctx(services, session)
        vm = _lookup(ctx, "VM", request, "ref", "uuid")
        if not metadata_only:
            _go_to(request, ctx, home_of_vm(ctx.store, vm))
        value = request.query.get("use_compression", "false").lower()
        if value not in _COMPRESSIONS:
            raise XenAPIError("INVALID_VALUE", "use_compression", value)
        compression = _COMPRESSIONS[value]
        # xapi's block layout unless the guide's appliance layout is asked for: it is what
        # every current xapi writes and what Xen Orchestra, xe and xva-img read
        fmt = request.query.get("format", "xapi").lower()
        if fmt not in ("appliance", "xapi"):
            raise XenAPIError("INVALID_VALUE", "format", fmt)
        if fmt == "appliance" and compression == "zstd":
            raise XenAPIError("INVALID_VALUE", "use_compression", value)
        # xxhash as xapi writes today; sha1 for older readers (Debian's xva-img 1.4)
        checksum = request.query.get("checksum", "xxhash").lower()
        if checksum not in ("xxhash", "sha1"):
            raise XenAPIError("INVALID_VALUE", "checksum", checksum)
        resp: web.StreamResponse | None = None
        try:
            async with _task(request, ctx, f"Export of VM {vm}") as task:
                rec = ctx.store.get("VM", vm)
                if not rec["is_a_template"] and not metadata_only:
                    require("export", vm, rec)
                async with ctx.operation("VM", vm, "export"):
                    if fmt == "xapi":
                        ova, disks = block_export(ctx, vm, with_disks=not metadata_only)
                        exp = await _opened(ctx, functools.partial(
                            export_blocks, ova, [] if metadata_only else disks,
                            compression=compression, checksum=checksum))
                    else:
                        app, files = appliance_for(ctx, vm)
                        # a chunk's tar header needs its compressed size: spool it in a little
                        # memory, then on the data disk (not a small /tmp)
                        exp = await _opened(ctx, functools.partial(
                            export_appliance, app, files, spool_memory=32 << 20,
                            spool_dir=str(_spool_dir(services))))
                    try:
                        resp = web.StreamResponse(headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Disposition": attachment(rec["name_label"], "xva"),
                            "task-id": task})
                        await resp.prepare(request)
                        await _pump(request, resp, ctx, iter(exp), lambda: exp.progress,
                                    exp.cancel)
                    finally:
                        await joined(ctx.streaming(exp.close))   # even if the client left
                services.tasks.succeed(task, "")
            # the body's end last: a client that has read it finds the VM free of the export
            # (VM.destroy right after works) and the task done
            await resp.write_eof()
            return resp
        except (XenAPIError, _ClientGone, ConnectionError) as e:
            return _stream_failed(request, resp, e, ctx.task)


# --- import ---------------------------------------------------------------------------------
async def import_(request: web.Request) -> web.StreamResponse:
    return await _import(request, metadata_only=False)


async def import_metadata(request: web.Request) -> web.StreamResponse:
    return await _import(request, metadata_only=True)


async def _body(request: web.Request, ctx: Ctx) -> AsyncIterator[bytes]:
    """The request body as it arrives, read on the loop; progress follows the bytes."""
    total = request.content_length if request.content_length and \
        request.content_length < _UNSURE else 0
    done = 0
    while True:
        try:
            data = await request.content.readany()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - aiohttp's payload errors: the peer stopped
            raise _ClientGone(f"{type(e).__name__}: {e}") from None
        if not data:
            return
        done += len(data)
        if total:
            ctx.progress(min(0.99, done / total))
        yield data


async def _import(request: web.Request, *, metadata_only: bool) -> web.StreamResponse:
    services = request.app[SERVICES]
    async with http_session(request, "import") as session:
        ctx = Ctx(services, session)
        if request.query.get("sr_id") or request.query.get("sr_uuid"):
            sr = _lookup(ctx, "SR", request, "sr_id", "sr_uuid")
        else:
            sr = ctx.vdis.default_sr()
        if not metadata_only:       # (a probe too: it is how clients learn where to send)
            _go_to(request, ctx, home_of_sr(ctx.store, sr))
        if _is_probe(request):
            return web.Response(text="")
        force = _flag(request, "force")
        job = ImportJob(ctx, sr, restore=_flag(request, "restore"), force=force,
                        metadata_only=metadata_only, dry_run=_flag(request, "dry_run"))

        async def on_metadata(meta: Metadata) -> Mapping[str, int] | None:
            if meta.layout == LAYOUT_APPLIANCE:
                if metadata_only:
                    raise XenAPIError("IMPORT_ERROR", "metadata import needs the xapi layout")
                return await job.from_appliance(meta.appliance)
            return await job.from_ova_xml(meta.ova_xml)

        def disk_path(disk: str) -> str:
            try:
                return job.paths[disk]
            except KeyError:
                raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", disk) from None

        try:
            async with _task(request, ctx, "VM import") as task:
                try:
                    # every worker step is joined inside: nothing writes once this returns
                    await ctx.tasks.race_cancel(task, import_xva(
                        _body(request, ctx), ctx.streaming, disk_path, on_metadata,
                        force=force, claim=services.metadata_budget.claim))
                    await job.commit()
                except BaseException:
                    await job.rollback()
                    raise
                services.tasks.succeed(task, job.vms)
            return web.Response(text=" ".join(job.vms) + "\n", headers={"task-id": task})
        except XenAPIError as e:
            return _error(e, ctx.task)
        except (_ClientGone, ConnectionError):
            _abort(request)
            return web.Response(status=400)


# --- raw VDIs -------------------------------------------------------------------------------
def _spool_dir(services) -> Path:
    """Where a transfer that cannot stream keeps its file: on the data disk, not a small /tmp."""
    spool = services.config.data_dir / "spool"
    spool.mkdir(exist_ok=True)
    return spool


def _disk_format(request: web.Request) -> str:
    fmt = request.query.get("format", "raw").lower()
    if fmt not in ("raw", "vhd", "qcow2"):
        raise XenAPIError("INVALID_VALUE", "format", fmt)
    return fmt


def _base_vdi(ctx: Ctx, request: web.Request, vdi: str) -> str | None:
    """`base=` (ref or uuid): a VDI of the same size the delta is taken against."""
    value = request.query.get("base", "")
    if not value:
        return None
    base = value if value.startswith("OpaqueRef:") else ctx.store.ref_of_uuid("VDI", value)
    if ctx.store.get("VDI", base)["virtual_size"] != ctx.store.get("VDI", vdi)["virtual_size"]:
        raise XenAPIError("INVALID_VALUE", "base", "a VDI of another size")
    return base


async def export_raw_vdi(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    async with http_session(request, "export_raw_vdi") as session:
        ctx = Ctx(services, session)
        vdi = _vdi_param(ctx, request)
        _go_to(request, ctx, _vdi_home(ctx, vdi))
        fmt = _disk_format(request)
        base = _base_vdi(ctx, request, vdi)
        if base is not None and fmt != "vhd":
            raise XenAPIError("INVALID_VALUE", "base", "a delta needs format=vhd")
        resp: web.StreamResponse | None = None
        try:
            async with _task(request, ctx, f"Export of VDI {vdi}") as task:
                rec = ctx.store.get("VDI", vdi)
                size, path = rec["virtual_size"], str(ctx.vdis.path(vdi))
                if not os.path.exists(path):          # said before any byte goes out
                    raise XenAPIError("VDI_MISSING", rec["SR"], vdi)
                if fmt == "vhd":
                    out = await _opened(ctx, functools.partial(
                        vhd_out, path, size,
                        str(ctx.vdis.path(base)) if base is not None else None))
                elif fmt == "qcow2":
                    out = await _opened(ctx, functools.partial(
                        qcow2_out, path, str(_spool_dir(services) / f"{task[10:]}.qcow2")))
                else:
                    out = raw_out(path, size)
                try:
                    resp = web.StreamResponse(headers={
                        "Content-Type": out.kind, "task-id": task,
                        "Content-Disposition": f'attachment; filename="{rec["uuid"]}.{fmt}"'})
                    resp.content_length = out.length
                    await resp.prepare(request)
                    await _pump(request, resp, ctx, out.pieces, out.progress, lambda: None)
                    await resp.write_eof()
                finally:
                    await joined(ctx.streaming(out.close))   # even if the client left
                services.tasks.succeed(task, "")
            return resp
        except (XenAPIError, _ClientGone, ConnectionError) as e:
            return _stream_failed(request, resp, e, ctx.task)


async def import_raw_vdi(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    async with http_session(request, "import_raw_vdi") as session:
        ctx = Ctx(services, session)
        if request.query.get("vdi"):
            _go_to(request, ctx, _vdi_home(ctx, _vdi_param(ctx, request)))
        elif request.query.get("sr_id") or request.query.get("sr_uuid"):
            _go_to(request, ctx, home_of_sr(ctx.store, _lookup(ctx, "SR", request, "sr_id",
                                                               "sr_uuid")))
        fmt = _disk_format(request)
        if fmt != "raw" and not request.query.get("vdi"):
            raise XenAPIError("INVALID_VALUE", "vdi", f"a {fmt} image goes into an existing VDI")
        if request.query.get("vdi") and _is_probe(request):
            _vdi_param(ctx, request)
            return web.Response(text="")        # the VDI stays as it is
        created = None
        try:
            async with _task(request, ctx, "Import of a raw VDI") as task:
                if request.query.get("vdi"):
                    vdi = _vdi_param(ctx, request)
                    for vbd in ctx.store.get("VDI", vdi)["VBDs"]:
                        if ctx.store.get("VBD", vbd)["currently_attached"]:
                            raise XenAPIError("VDI_IN_USE", vdi, "import_raw_vdi")
                else:
                    if request.query.get("sr_id") or request.query.get("sr_uuid"):
                        sr = _lookup(ctx, "SR", request, "sr_id", "sr_uuid")
                    else:
                        sr = ctx.vdis.default_sr()
                    if not request.content_length:
                        raise XenAPIError("INVALID_VALUE", "Content-Length", "")
                    vdi = created = await ctx.vdis.create(sr, request.content_length, {
                        "name_label": request.query.get("name_label", "imported disk")})
                size = ctx.store.get("VDI", vdi)["virtual_size"]
                body, path = _body(request, ctx), str(ctx.vdis.path(vdi))
                if fmt == "qcow2":
                    spool = str(_spool_dir(services) / f"{task[10:]}.upload.qcow2")
                    work = import_qcow2(body, ctx.streaming, path, size, spool)
                elif fmt == "vhd":
                    work = import_vhd(body, ctx.streaming, path, size)
                else:
                    work = import_raw(body, ctx.streaming, path, size,
                                      whole=request.headers.get(FRAMING) == FRAMED_BY_CLOSE)
                await ctx.tasks.race_cancel(task, work)
                await ctx.vdis.refresh(vdi)
                services.tasks.succeed(task, vdi)
            return web.Response(text=vdi + "\n", headers={"task-id": task})
        except BaseException as e:
            if created is not None and ctx.store.find("VDI", created) is not None:
                await ctx.vdis.destroy(created)
            if isinstance(e, XenAPIError):
                return _error(e, ctx.task)
            if isinstance(e, (_ClientGone, ConnectionError)):
                _abort(request)
                return web.Response(status=400)
            raise


_UPLOADS = frozenset({"/import", "/import_metadata", "/import_raw_vdi"})


def framed_by_close(method: str, path: str) -> bool:
    """Uploads whose body may run until the client's end (HTTP/1.0 without Content-Length, as
    xapi reads them); the front end turns such a body into chunks."""
    return method == "PUT" and (path[:-1] if path.endswith("/") else path) in _UPLOADS


def routes() -> list[web.RouteDef]:
    out = []
    for path, method, handler in (("/export", "GET", export),
                                  ("/export_metadata", "GET", export_metadata),
                                  ("/import", "PUT", import_),
                                  ("/import_metadata", "PUT", import_metadata),
                                  ("/export_raw_vdi", "GET", export_raw_vdi),
                                  ("/import_raw_vdi", "PUT", import_raw_vdi)):
        out.append(web.route(method, path, handler))
        out.append(web.route(method, path + "/", handler))
    return out
