"""SR, PBD and VDI messages on the local file SR, plus the VDI helpers VM operations share.

File work runs in a thread; records are written only once the file exists, and a file whose
record could not be written is removed again, so nothing half-made survives a failure.
"""

from __future__ import annotations

import asyncio
import uuid as _uuid
from pathlib import Path

from ..datamodel import CLASSES
from ..dispatch import Ctx, MessageTable
from ..errors import XenAPIError
from ..implicit import ANY_RECORD, check_record
from ..storage import FileSR
from ..store import new_uuid
from ..xtypes import BOOL, INT, NULL_REF, STRING, MapOf, Ref

table = MessageTable()

__all__ = ["table", "sr_backend", "vdi_file", "create_vdi", "destroy_vdi", "copy_vdi",
           "refresh_sr", "refresh_vdi", "default_sr"]


def sr_backend(ctx: Ctx, sr: str) -> FileSR:
    """The FileSR behind `sr` through its attached PBD on this host."""
    rec = ctx.store.get("SR", sr)
    for pbd in rec["PBDs"]:
        p = ctx.store.get("PBD", pbd)
        if p["host"] == ctx.agent.host_ref:
            if not p["currently_attached"]:
                raise XenAPIError("SR_NOT_ATTACHED", sr)
            path = p["device_config"].get("path")
            if not path:
                raise XenAPIError("SR_BACKEND_FAILURE", "no device_config:path", sr)
            return FileSR(path)
    raise XenAPIError("SR_HAS_NO_PBDS", sr)


def vdi_file(ctx: Ctx, vdi: str) -> Path:
    rec = ctx.store.get("VDI", vdi)
    return sr_backend(ctx, rec["SR"]).vdi_path(rec["location"])


def default_sr(ctx: Ctx) -> str:
    sr = ctx.store.get("pool", ctx.agent.pool_ref)["default_SR"]
    if sr == NULL_REF or ctx.store.find("SR", sr) is None:
        raise XenAPIError("DEFAULT_SR_NOT_FOUND", sr)
    return sr


def refresh_sr(ctx: Ctx, sr: str) -> None:
    """SR sizes from the filesystem; virtual_allocation from the VDIs."""
    try:
        stats = sr_backend(ctx, sr).stats()
    except (XenAPIError, OSError):
        return
    rec = ctx.store.get("SR", sr)
    alloc = sum(ctx.store.get("VDI", v)["virtual_size"] for v in rec["VDIs"])
    ctx.store.update("SR", sr, {"physical_size": stats.physical_size,
                                "physical_utilisation": stats.physical_utilisation,
                                "virtual_allocation": alloc})


def refresh_vdi(ctx: Ctx, vdi: str) -> None:
    rec = ctx.store.find("VDI", vdi)
    if rec is not None:
        used = sr_backend(ctx, rec["SR"]).allocated(rec["location"])
        if used != rec["physical_utilisation"]:
            ctx.store.update("VDI", vdi, {"physical_utilisation": used})


async def create_vdi(ctx: Ctx, sr: str, size: int, fields: dict) -> str:
    """A sparse file and its record, or neither."""
    backend = sr_backend(ctx, sr)
    uuid = new_uuid()
    await asyncio.to_thread(backend.create, uuid, size)
    try:
        with ctx.store.transaction():
            vdi = ctx.store.create("VDI", {
                "type": "user", **fields, "uuid": uuid, "SR": sr, "virtual_size": size,
                "location": uuid, "physical_utilisation": backend.allocated(uuid),
                "allowed_operations": ["clone", "copy", "resize", "destroy", "snapshot"]})
            refresh_sr(ctx, sr)
    except BaseException:
        backend.destroy(uuid)
        raise
    return vdi


async def copy_vdi(ctx: Ctx, vdi: str, sr: str | None = None, fields: dict | None = None) -> str:
    """A sparse copy (a reflink where the filesystem can) of `vdi`, in `sr` or its own SR."""
    src = ctx.store.get("VDI", vdi)
    sr = sr if sr and sr != NULL_REF else src["SR"]
    src_path = vdi_file(ctx, vdi)
    dst = sr_backend(ctx, sr)
    uuid = new_uuid()

    loop = asyncio.get_running_loop()
    total = max(1, src["physical_utilisation"])

    def check(done: int) -> None:
        # In the copying thread: read-only look at the task, progress handed to the loop.
        ctx.raise_if_cancelled()
        loop.call_soon_threadsafe(ctx.progress, min(0.99, done / total))
    try:
        await asyncio.to_thread(dst.copy_from, src_path, uuid, src["virtual_size"], check)
    except FileNotFoundError:
        raise XenAPIError("VDI_MISSING", src["SR"], vdi) from None
    keep = ("name_label", "name_description", "type", "sharable", "read_only", "other_config",
            "xenstore_data", "sm_config", "tags")
    try:
        with ctx.store.transaction():
            new = ctx.store.create("VDI", {
                **{k: src[k] for k in keep}, **(fields or {}), "uuid": uuid, "SR": sr,
                "virtual_size": src["virtual_size"], "location": uuid,
                "physical_utilisation": dst.allocated(uuid),
                "allowed_operations": src["allowed_operations"] or ["clone", "copy", "destroy"]})
            refresh_sr(ctx, sr)
    except BaseException:
        dst.destroy(uuid)
        raise
    return new


def destroy_vdi(ctx: Ctx, vdi: str) -> None:
    rec = ctx.store.get("VDI", vdi)
    for vbd in rec["VBDs"]:
        if ctx.store.get("VBD", vbd)["currently_attached"]:
            raise XenAPIError("VDI_IN_USE", vdi, "destroy")
    try:
        backend = sr_backend(ctx, rec["SR"])
    except XenAPIError:
        backend = None
    with ctx.store.transaction():
        for vbd in rec["VBDs"]:
            ctx.store.destroy("VBD", vbd)
        ctx.store.destroy("VDI", vdi)
    if backend is not None:
        backend.destroy(rec["location"])
        refresh_sr(ctx, rec["SR"])


# --- VDI ------------------------------------------------------------------------------------
@table.message("VDI.create", ("args", ANY_RECORD))
async def vdi_create(ctx: Ctx, record: dict) -> str:
    fields = check_record(ctx, CLASSES["VDI"], record)
    sr = fields.pop("SR", NULL_REF)
    if sr == NULL_REF:
        raise XenAPIError("HANDLE_INVALID", "SR", sr)
    size = fields.pop("virtual_size", 0)
    if size < 0:
        raise XenAPIError("INVALID_VALUE", "virtual_size", size)
    return await create_vdi(ctx, sr, size, fields)


@table.message("VDI.destroy", ("self", Ref("VDI")))
def vdi_destroy(ctx: Ctx, vdi: str) -> str:
    destroy_vdi(ctx, vdi)
    return ""


@table.message("VDI.resize", ("self", Ref("VDI")), ("size", INT))
async def vdi_resize(ctx: Ctx, vdi: str, size: int) -> str:
    rec = ctx.store.get("VDI", vdi)
    await asyncio.to_thread(sr_backend(ctx, rec["SR"]).resize, rec["location"], size)
    ctx.store.update("VDI", vdi, {"virtual_size": size})
    refresh_sr(ctx, rec["SR"])
    return ""


@table.message("VDI.resize_online", ("self", Ref("VDI")), ("size", INT))
async def vdi_resize_online(ctx: Ctx, vdi: str, size: int) -> str:
    return await vdi_resize(ctx, vdi, size)


@table.message("VDI.clone", ("self", Ref("VDI")), ("driver_params", MapOf(STRING, STRING)),
               optional=1)
async def vdi_clone(ctx: Ctx, vdi: str, driver_params: dict | None = None) -> str:
    return await copy_vdi(ctx, vdi)


@table.message("VDI.copy", ("self", Ref("VDI")), ("sr", Ref("SR")))
async def vdi_copy(ctx: Ctx, vdi: str, sr: str) -> str:
    if sr != NULL_REF:
        ctx.store.get("SR", sr)
    return await copy_vdi(ctx, vdi, sr)


@table.message("VDI.forget", ("self", Ref("VDI")))
def vdi_forget(ctx: Ctx, vdi: str) -> str:
    rec = ctx.store.get("VDI", vdi)
    with ctx.store.transaction():
        for vbd in rec["VBDs"]:
            ctx.store.destroy("VBD", vbd)
        ctx.store.destroy("VDI", vdi)
    return ""


# --- SR -------------------------------------------------------------------------------------
@table.message("SR.scan", ("self", Ref("SR")))
async def sr_scan(ctx: Ctx, sr: str) -> str:
    backend = sr_backend(ctx, sr)
    present = await asyncio.to_thread(backend.scan)
    rec = ctx.store.get("SR", sr)
    known = {ctx.store.get("VDI", v)["location"]: v for v in rec["VDIs"]}
    with ctx.store.transaction():
        for location, size in present.items():
            if location not in known:   # a file added by hand becomes a VDI
                ctx.store.create("VDI", {
                    "uuid": location if _is_uuid(location) and not _uuid_taken(ctx, location)
                    else new_uuid(), "name_label": location, "SR": sr, "virtual_size": size,
                    "location": location, "type": "user",
                    "physical_utilisation": backend.allocated(location),
                    "allowed_operations": ["clone", "copy", "resize", "destroy"]})
        for location, vdi in known.items():
            if location in present:
                ctx.store.update("VDI", vdi, {"virtual_size": present[location], "missing": False,
                                              "physical_utilisation": backend.allocated(location)})
            elif any(ctx.store.get("VBD", b)["currently_attached"]
                     for b in ctx.store.get("VDI", vdi)["VBDs"]):
                ctx.store.update("VDI", vdi, {"missing": True})
            else:                        # a file removed by hand: forget its record
                for vbd in ctx.store.get("VDI", vdi)["VBDs"]:
                    ctx.store.destroy("VBD", vbd)
                ctx.store.destroy("VDI", vdi)
        refresh_sr(ctx, sr)
    return ""


def _is_uuid(text: str) -> bool:
    try:
        return str(_uuid.UUID(text)) == text
    except ValueError:
        return False


def _uuid_taken(ctx: Ctx, uuid: str) -> bool:
    try:
        ctx.store.ref_of_uuid("VDI", uuid)
        return True
    except XenAPIError:
        return False


@table.message("SR.create", ("host", Ref("host")), ("device_config", MapOf(STRING, STRING)),
               ("physical_size", INT), ("name_label", STRING), ("name_description", STRING),
               ("type", STRING), ("content_type", STRING), ("shared", BOOL),
               ("sm_config", MapOf(STRING, STRING)), optional=1)
async def sr_create(ctx: Ctx, host: str, device_config: dict, physical_size: int, name: str,
                    description: str, type_: str, content_type: str, shared: bool,
                    sm_config: dict | None = None) -> str:
    ctx.store.get("host", host)
    if type_ not in ("file", "ext"):
        raise XenAPIError("SR_UNKNOWN_DRIVER", type_)
    path = device_config.get("path")
    if not path or not Path(path).is_absolute():
        raise XenAPIError("INVALID_VALUE", "device_config:path", path or "")
    await asyncio.to_thread(Path(path).mkdir, parents=True, exist_ok=True)
    with ctx.store.transaction():
        sr = ctx.store.create("SR", {
            "name_label": name, "name_description": description, "type": type_,
            "content_type": content_type, "shared": shared, "sm_config": sm_config or {},
            "allowed_operations": ["vdi_create", "vdi_destroy", "scan", "vdi_clone"]})
        ctx.store.create("PBD", {"host": host, "SR": sr, "device_config": device_config,
                                 "currently_attached": True})
        refresh_sr(ctx, sr)
    return sr


@table.message("SR.forget", ("self", Ref("SR")))
def sr_forget(ctx: Ctx, sr: str) -> str:
    rec = ctx.store.get("SR", sr)
    for vdi in rec["VDIs"]:
        if any(ctx.store.get("VBD", b)["currently_attached"]
               for b in ctx.store.get("VDI", vdi)["VBDs"]):
            raise XenAPIError("VDI_IN_USE", vdi, "forget")
    with ctx.store.transaction():
        for vdi in rec["VDIs"]:
            vdi_forget(ctx, vdi)
        for pbd in rec["PBDs"]:
            ctx.store.destroy("PBD", pbd)
        ctx.store.destroy("SR", sr)
    return ""


@table.message("SR.update", ("self", Ref("SR")))
def sr_update(ctx: Ctx, sr: str) -> str:
    refresh_sr(ctx, sr)
    return ""


# --- PBD ------------------------------------------------------------------------------------
@table.message("PBD.plug", ("self", Ref("PBD")))
async def pbd_plug(ctx: Ctx, pbd: str) -> str:
    rec = ctx.store.get("PBD", pbd)
    path = rec["device_config"].get("path", "")
    ok = bool(path) and await asyncio.to_thread(Path(path).is_dir)
    if not ok:
        raise XenAPIError("SR_BACKEND_FAILURE", "device_config:path is not a directory", path)
    ctx.store.update("PBD", pbd, {"currently_attached": True})
    refresh_sr(ctx, rec["SR"])
    return ""


@table.message("PBD.unplug", ("self", Ref("PBD")))
def pbd_unplug(ctx: Ctx, pbd: str) -> str:
    rec = ctx.store.get("PBD", pbd)
    for vdi in ctx.store.get("SR", rec["SR"])["VDIs"]:
        for vbd in ctx.store.get("VDI", vdi)["VBDs"]:
            if ctx.store.get("VBD", vbd)["currently_attached"]:
                raise XenAPIError("VDI_IN_USE", vdi, "unplug")
    ctx.store.update("PBD", pbd, {"currently_attached": False})
    return ""


@table.message("PBD.create", ("args", ANY_RECORD))
def pbd_create(ctx: Ctx, record: dict) -> str:
    fields = check_record(ctx, CLASSES["PBD"], record)
    for name, cls in (("host", "host"), ("SR", "SR")):
        if fields.get(name, NULL_REF) == NULL_REF:
            raise XenAPIError("HANDLE_INVALID", cls, NULL_REF)
    return ctx.store.create("PBD", {**fields, "currently_attached": False})


@table.message("PBD.destroy", ("self", Ref("PBD")))
def pbd_destroy(ctx: Ctx, pbd: str) -> str:
    if ctx.store.get("PBD", pbd)["currently_attached"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "PBD is currently attached")
    ctx.store.destroy("PBD", pbd)
    return ""

