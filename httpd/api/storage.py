"""SR, PBD and VDI messages on the local file SR (the VDI helpers are `core.vdis`)."""

from __future__ import annotations

import uuid as _uuid
from pathlib import Path

from ..model.datamodel import CLASSES
from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..core.implicit import ANY_RECORD, check_record
from ..core.operations import refresh_allowed
from ..model.store import new_uuid
from ..model.xtypes import BOOL, INT, NULL_REF, STRING, MapOf, Ref

table = MessageTable()

__all__ = ["table"]


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
    return await ctx.vdis.create(sr, size, fields)


@table.message("VDI.destroy", ("self", Ref("VDI")))
async def vdi_destroy(ctx: Ctx, vdi: str) -> str:
    await ctx.vdis.destroy(vdi)
    return ""


@table.message("VDI.resize", ("self", Ref("VDI")), ("size", INT))
async def vdi_resize(ctx: Ctx, vdi: str, size: int) -> str:
    rec = ctx.store.get("VDI", vdi)
    await ctx.blocking(ctx.vdis.sr_backend(rec["SR"]).resize, rec["location"], size)
    ctx.store.update("VDI", vdi, {"virtual_size": size})
    await ctx.vdis.refresh_sr(rec["SR"])
    return ""


@table.message("VDI.resize_online", ("self", Ref("VDI")), ("size", INT))
async def vdi_resize_online(ctx: Ctx, vdi: str, size: int) -> str:
    return await vdi_resize(ctx, vdi, size)


@table.message("VDI.clone", ("self", Ref("VDI")), ("driver_params", MapOf(STRING, STRING)),
               optional=1)
async def vdi_clone(ctx: Ctx, vdi: str, driver_params: dict | None = None) -> str:
    return await ctx.vdis.copy(vdi)


@table.message("VDI.snapshot", ("self", Ref("VDI")), ("driver_params", MapOf(STRING, STRING)),
               optional=1)
async def vdi_snapshot(ctx: Ctx, vdi: str, driver_params: dict | None = None) -> str:
    """A snapshot of one disk (xapi's; VM.snapshot makes these for each of a VM's disks): a
    reflink where the file system has them, else a copy of its allocated data, marked
    `is_a_snapshot`, `snapshot_of` the disk, in the disk's `snapshots`."""
    return await ctx.vdis.snapshot(vdi)


@table.message("VDI.copy", ("self", Ref("VDI")), ("sr", Ref("SR")))
async def vdi_copy(ctx: Ctx, vdi: str, sr: str) -> str:
    if sr != NULL_REF:
        ctx.store.get("SR", sr)
    return await ctx.vdis.copy(vdi, sr)


@table.message("VDI.forget", ("self", Ref("VDI")))
def vdi_forget(ctx: Ctx, vdi: str) -> str:
    rec = ctx.store.get("VDI", vdi)
    with ctx.store.transaction():
        for vbd in rec["VBDs"]:
            ctx.store.destroy("VBD", vbd)
        ctx.store.destroy("VDI", vdi)
    return ""


# --- changed block tracking and NBD: not on a file SR (clients then use HTTP transfers) ---
@table.message("VDI.get_nbd_info", ("self", Ref("VDI")))
def vdi_get_nbd_info(ctx: Ctx, vdi: str) -> list:
    """No network has the NBD purpose here: an empty list (Xen Orchestra then uses HTTP)."""
    ctx.store.get("VDI", vdi)
    return []


def _no_cbt(ctx: Ctx, vdi: str) -> str:
    raise XenAPIError("SR_OPERATION_NOT_SUPPORTED", ctx.store.get("VDI", vdi)["SR"])


@table.message("VDI.enable_cbt", ("self", Ref("VDI")))
def vdi_enable_cbt(ctx: Ctx, vdi: str) -> str:
    return _no_cbt(ctx, vdi)


@table.message("VDI.disable_cbt", ("self", Ref("VDI")))
def vdi_disable_cbt(ctx: Ctx, vdi: str) -> str:
    return _no_cbt(ctx, vdi)


@table.message("VDI.list_changed_blocks", ("vdi_from", Ref("VDI")), ("vdi_to", Ref("VDI")))
def vdi_list_changed_blocks(ctx: Ctx, vdi_from: str, vdi_to: str) -> str:
    ctx.store.get("VDI", vdi_to)
    return _no_cbt(ctx, vdi_from)


@table.message("VDI.data_destroy", ("self", Ref("VDI")))
def vdi_data_destroy(ctx: Ctx, vdi: str) -> str:
    """Only a snapshot with CBT metadata may lose its data; none has it here."""
    ctx.store.get("VDI", vdi)
    raise XenAPIError("VDI_NO_CBT_METADATA", vdi)


# --- SR -------------------------------------------------------------------------------------
@table.message("SR.scan", ("self", Ref("SR")))
async def sr_scan(ctx: Ctx, sr: str) -> str:
    backend = ctx.vdis.sr_backend(sr)
    present = await ctx.blocking(backend.scan)
    rec = ctx.store.get("SR", sr)
    known = {ctx.store.get("VDI", v)["location"]: v for v in rec["VDIs"]}
    with ctx.store.transaction():
        for location, (size, used) in present.items():
            if location not in known:   # a file added by hand becomes a VDI
                iso = rec["type"] == "iso"     # ISO images: named by their file, read-only
                added = ctx.store.create("VDI", {
                    "uuid": location if _is_uuid(location) and not _uuid_taken(ctx, location)
                    else new_uuid(), "name_label": location + backend.suffix if iso
                    else location, "SR": sr, "virtual_size": size, "read_only": iso,
                    "location": location, "type": "user", "physical_utilisation": used})
                refresh_allowed(ctx.store, "VDI", added)
        for location, vdi in known.items():
            if location in present:
                size, used = present[location]
                ctx.store.update("VDI", vdi, {"virtual_size": size, "missing": False,
                                              "physical_utilisation": used})
            elif any(ctx.store.get("VBD", b)["currently_attached"]
                     for b in ctx.store.get("VDI", vdi)["VBDs"]):
                ctx.store.update("VDI", vdi, {"missing": True})
            else:                        # a file removed by hand: forget its record
                for vbd in ctx.store.get("VDI", vdi)["VBDs"]:
                    ctx.store.destroy("VBD", vbd)
                ctx.store.destroy("VDI", vdi)
    await ctx.vdis.refresh_sr(sr)
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
    if type_ not in ("file", "ext", "iso"):
        raise XenAPIError("SR_UNKNOWN_DRIVER", type_)
    path = device_config.get("path")
    if not path or not Path(path).is_absolute():
        raise XenAPIError("INVALID_VALUE", "device_config:path", path or "")
    await ctx.blocking(Path(path).mkdir, parents=True, exist_ok=True)
    with ctx.store.transaction():
        sr = ctx.store.create("SR", {
            "name_label": name, "name_description": description, "type": type_,
            "content_type": content_type, "shared": shared, "sm_config": sm_config or {}})
        refresh_allowed(ctx.store, "SR", sr)
        # a shared SR (a directory every host of the pool sees, like NFS) is attached on each
        # host, as xapi's: any of them can start a VM whose disks are there
        for h in (ctx.store.all("host") if shared else [host]):
            ctx.store.create("PBD", {"host": h, "SR": sr, "device_config": device_config,
                                     "currently_attached": True})
    await ctx.vdis.refresh_sr(sr)
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
async def sr_update(ctx: Ctx, sr: str) -> str:
    await ctx.vdis.refresh_sr(sr)
    return ""


# --- PBD ------------------------------------------------------------------------------------
@table.message("PBD.plug", ("self", Ref("PBD")))
async def pbd_plug(ctx: Ctx, pbd: str) -> str:
    rec = ctx.store.get("PBD", pbd)
    path = rec["device_config"].get("path", "")
    ok = bool(path) and await ctx.blocking(Path(path).is_dir)
    if not ok:
        raise XenAPIError("SR_BACKEND_FAILURE", "device_config:path is not a directory", path)
    ctx.store.update("PBD", pbd, {"currently_attached": True})
    await ctx.vdis.refresh_sr(rec["SR"])
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

