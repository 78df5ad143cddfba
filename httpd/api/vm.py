"""VM messages: create/destroy, clone/copy/provision, and the power-state machine.

Each operation holds the VM's lock (`Ctx.operation`) while it runs, is guarded by the power
table (`core.power.require`) and changes the power state only through `Lifecycle.enter`, after
the domain backend did its part. Disk work done
before a failure is undone (copied VDIs destroyed) so a failed clone leaves nothing.
"""

from __future__ import annotations

import asyncio
import datetime as _dt

from lxml import etree

from ..model.datamodel import CLASSES
from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..core.implicit import ANY_RECORD, check_record
from ..core.devices import new_mac
from ..core.operations import refresh_allowed
from ..core.power import VM_OPERATIONS, require
from .tpm import copy_vtpms, destroy_vtpms
from ..model.xtypes import BOOL, INT, NULL_REF, STRING, MapOf, Ref, SetOf

table = MessageTable()

__all__ = ["table"]

_VM = ("vm", Ref("VM"))
_SAFE_XML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _vm(ctx: Ctx, vm: str) -> dict:
    rec = ctx.store.get("VM", vm)
    if rec["is_control_domain"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED", "this is the control domain")
    return rec


def _not_template(vm: str, rec: dict, op: str) -> None:
    if rec["is_a_template"]:
        raise XenAPIError("VM_IS_TEMPLATE", vm, op)


# --- create / destroy ----------------------------------------------------------------------
@table.message("VM.create", ("args", ANY_RECORD))
def vm_create(ctx: Ctx, record: dict) -> str:
    fields = check_record(ctx, CLASSES["VM"], record)
    with ctx.store.transaction():
        metrics = ctx.store.create("VM_metrics", {"install_time": _utcnow()})
        vm = ctx.store.create("VM", {**fields, "power_state": "Halted", "metrics": metrics})
        refresh_allowed(ctx.store, "VM", vm)
    return vm


@table.message("VM.destroy", ("self", Ref("VM")))
async def vm_destroy(ctx: Ctx, vm: str) -> str:
    rec = _vm(ctx, vm)
    require("destroy", vm, rec)
    if rec["current_operations"]:
        key, op = next(iter(rec["current_operations"].items()))
        raise XenAPIError("OTHER_OPERATION_IN_PROGRESS", "VM", vm, op, key)
    if rec["suspend_VDI"] != NULL_REF and ctx.store.find("VDI", rec["suspend_VDI"]):
        await ctx.vdis.destroy(rec["suspend_VDI"])
    with ctx.store.transaction():
        for cls, field in (("VBD", "VBDs"), ("VIF", "VIFs"), ("console", "consoles")):
            for ref in rec[field]:
                ctx.store.destroy(cls, ref)
        for cls, field in (("VM_metrics", "metrics"), ("VM_guest_metrics", "guest_metrics")):
            if rec[field] != NULL_REF and ctx.store.find(cls, rec[field]) is not None:
                ctx.store.destroy(cls, rec[field])
        destroy_vtpms(ctx.store, rec)
        ctx.store.destroy("VM", vm)
    ctx.lifecycle.destroyed(rec["uuid"])
    return ""


# --- clone / copy / provision --------------------------------------------------------------
_RESET = {"power_state": "Halted", "is_default_template": False, "current_operations": {},
          "domid": -1, "resident_on": NULL_REF, "guest_metrics": NULL_REF, "suspend_VDI": NULL_REF,
          "is_a_snapshot": False, "snapshot_of": NULL_REF, "snapshot_time": None,
          "generation_id": "", "blobs": {}, "uuid": ""}


async def _duplicate(ctx: Ctx, vm: str, new_name: str, sr: str | None, op: str, *,
                     snapshot: bool = False, ignore: frozenset[str] = frozenset()) -> str:
    """clone, copy and snapshot: the VM's record, its VBDs, VIFs and copies of its disks
    (reflinks where the file system has them, else copies of the allocated data). A snapshot
    is a template marked `is_a_snapshot`, `snapshot_of` the VM, keeping its MACs; its disks
    are snapshots of the VM's (`ignore`: VDIs left out, their VBDs too)."""
    rec = _vm(ctx, vm)
    if not rec["is_a_template"] or snapshot:
        require(op, vm, rec)
    now = _utcnow()
    created: list[str] = []
    async with ctx.operation("VM", vm, op):
        try:
            disk_map = {}
            vbds = [b for b in (ctx.store.get("VBD", r) for r in rec["VBDs"])
                    if b["VDI"] not in ignore]
            for b in vbds:
                if b["VDI"] != NULL_REF and b["VDI"] not in disk_map:
                    ctx.raise_if_cancelled()
                    disk_map[b["VDI"]] = await (ctx.vdis.snapshot(b["VDI"], sr, now) if snapshot
                                                else ctx.vdis.copy(b["VDI"], sr))
                    created.append(disk_map[b["VDI"]])
            with ctx.store.transaction():
                source = ctx.store.get("VM", vm)
                fields = {f.name: source[f.name] for f in CLASSES["VM"].fields
                          if not f.reverse and f.name not in _RESET}
                fields.update({k: v for k, v in _RESET.items() if v is not None and k != "uuid"})
                other = {k: v for k, v in source["other_config"].items() if k != "default_template"}
                metrics = ctx.store.create("VM_metrics", {"install_time": _utcnow()})
                if snapshot:
                    fields.update({"is_a_snapshot": True, "snapshot_of": vm,
                                   "snapshot_time": now, "is_a_template": True})
                new = ctx.store.create("VM", {**fields, "name_label": new_name,
                                              "other_config": other, "metrics": metrics})
                for b in vbds:
                    keep = {k: b[k] for k in ("userdevice", "bootable", "mode", "type",
                                              "unpluggable", "empty", "other_config",
                                              "qos_algorithm_type", "qos_algorithm_params")}
                    ctx.store.create("VBD", {**keep, "VM": new,
                                             "VDI": disk_map.get(b["VDI"], NULL_REF)})
                for vif in rec["VIFs"]:
                    v = ctx.store.get("VIF", vif)
                    ctx.store.create("VIF", {
                        "device": v["device"], "network": v["network"], "VM": new,
                        "MAC": v["MAC"] if snapshot else new_mac(),
                        "MAC_autogenerated": not snapshot, "MTU": v["MTU"],
                        "other_config": v["other_config"]})
                copy_vtpms(ctx.store, source, new)
                refresh_allowed(ctx.store, "VM", new)
            return new
        except BaseException:
            for vdi in created:
                if ctx.store.find("VDI", vdi) is not None:
                    await ctx.vdis.destroy(vdi)
            raise


@table.message("VM.clone", _VM, ("new_name", STRING))
async def vm_clone(ctx: Ctx, vm: str, new_name: str) -> str:
    return await _duplicate(ctx, vm, new_name, None, "clone")


@table.message("VM.snapshot", _VM, ("new_name", STRING), ("ignore_vdis", SetOf(Ref("VDI"))),
               optional=1)
async def vm_snapshot(ctx: Ctx, vm: str, new_name: str, ignore_vdis: list | None = None) -> str:
    return await _duplicate(ctx, vm, new_name, None, "snapshot", snapshot=True,
                            ignore=frozenset(ignore_vdis or ()))


@table.message("VM.checkpoint", _VM, ("new_name", STRING))
async def vm_checkpoint(ctx: Ctx, vm: str, new_name: str) -> str:
    """A snapshot of a running VM's disks and memory: the snapshot is Suspended, its suspend
    VDI holding the domain's state as it was; the VM runs on. Reverting to it brings the VM
    back suspended there."""
    rec = _vm(ctx, vm)
    require("checkpoint", vm, rec)
    dom = ctx.lifecycle.domain(rec)
    await dom.pause()                              # disks and memory of one moment
    try:
        snap = await _duplicate(ctx, vm, new_name, None, "checkpoint", snapshot=True)
        image = None
        try:
            image = await _suspend_image(ctx, rec, f"Suspend image for {new_name}")
            await dom.save(str(ctx.vdis.path(image)))
        except BaseException:                      # no half checkpoint: its disks go too
            disks = [ctx.store.get("VBD", b)["VDI"] for b in ctx.store.get("VM", snap)["VBDs"]]
            await vm_destroy(ctx, snap)
            for vdi in [*disks, image]:
                if vdi not in (None, NULL_REF) and ctx.store.find("VDI", vdi) is not None:
                    await ctx.vdis.destroy(vdi)
            raise
    finally:
        await dom.unpause()
    ctx.store.update("VM", snap, {"power_state": "Suspended", "suspend_VDI": image})
    return snap


async def _suspend_image(ctx: Ctx, rec: dict, label: str) -> str:
    """A VDI for a domain's state, on the pool's suspend SR (else the default SR)."""
    pool = ctx.store.get("pool", ctx.host.pool_ref)
    sr = pool["suspend_image_SR"] if ctx.store.find("SR", pool["suspend_image_SR"]) \
        else ctx.vdis.default_sr()
    return await ctx.vdis.create(sr, max(rec["memory_static_max"], 2**20),
                                 {"name_label": label, "type": "suspend"})


@table.message("VM.revert", ("snapshot", Ref("VM")))
async def vm_revert(ctx: Ctx, snap: str) -> str:
    """The VM a snapshot is of gets the snapshot's disks back (copies of them, so the snapshot
    stays), halted, as the snapshot was taken of its disks."""
    srec = _vm(ctx, snap)
    vm = srec["snapshot_of"]
    if not srec["is_a_snapshot"] or ctx.store.find("VM", vm) is None:
        raise XenAPIError("VM_REVERT_FAILED", snap, vm)
    rec = _vm(ctx, vm)
    if rec["power_state"] != "Halted":
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    async with ctx.operation("VM", vm, "revert"):
        by_device = {ctx.store.get("VBD", b)["userdevice"]: ctx.store.get("VBD", b)
                     for b in srec["VBDs"]}
        for b in rec["VBDs"]:
            mine = ctx.store.get("VBD", b)
            theirs = by_device.get(mine["userdevice"])
            if theirs is None or theirs["VDI"] == NULL_REF or mine["VDI"] == NULL_REF:
                continue
            old = mine["VDI"]
            fresh = await ctx.vdis.copy(theirs["VDI"], ctx.store.get("VDI", old)["SR"],
                                        {"name_label": ctx.store.get("VDI", old)["name_label"]})
            ctx.store.update("VBD", b, {"VDI": fresh})
            await ctx.vdis.destroy(old)
        if srec["power_state"] == "Suspended" and srec["suspend_VDI"] != NULL_REF:
            image = await ctx.vdis.copy(srec["suspend_VDI"])     # a checkpoint's memory
            ctx.lifecycle.enter(vm, "Suspended", suspend_vdi=image)
    return ""


@table.message("VM.copy", _VM, ("new_name", STRING), ("sr", Ref("SR")))
async def vm_copy(ctx: Ctx, vm: str, new_name: str, sr: str) -> str:
    if sr != NULL_REF:
        ctx.store.get("SR", sr)
    return await _duplicate(ctx, vm, new_name, sr if sr != NULL_REF else None, "copy")


def _provision_disks(text: str) -> list[dict]:
    try:
        root = etree.fromstring(text.encode(), _SAFE_XML)
    except etree.XMLSyntaxError as e:
        raise XenAPIError("INVALID_VALUE", "other_config:disks", str(e)) from None
    if root.tag != "provision":
        raise XenAPIError("INVALID_VALUE", "other_config:disks", "expected <provision>")
    disks = []
    for el in root.iter("disk"):
        try:
            size = int(el.get("size", ""))
        except ValueError:
            raise XenAPIError("INVALID_VALUE", "other_config:disks", "size") from None
        disks.append({"device": el.get("device", str(len(disks))), "size": size,
                      "sr": el.get("sr", ""), "bootable": el.get("bootable") == "true",
                      "type": el.get("type", "system")})
    return disks


@table.message("VM.provision", _VM)
async def vm_provision(ctx: Ctx, vm: str) -> str:
    rec = _vm(ctx, vm)
    require("provision", vm, rec)
    spec = rec["other_config"].get("disks", "")
    disks = _provision_disks(spec) if spec else []
    created: list[str] = []
    async with ctx.operation("VM", vm, "provision"):
        try:
            for i, d in enumerate(disks):
                ctx.raise_if_cancelled()
                sr = ctx.vdis.default_sr() if not d["sr"] else ctx.store.ref_of_uuid("SR", d["sr"])
                vdi = await ctx.vdis.create(sr, d["size"], {
                    "name_label": f"{rec['name_label']} {d['device']}", "type": d["type"]})
                created.append(vdi)
                oc = rec["other_config"]
                distro = oc.get("debian-release") or oc.get("rootfs")
                if distro and d["bootable"]:
                    await asyncio.get_running_loop().run_in_executor(
                        ctx.services.executors.disk, ctx.services.domains.provision_root,
                        str(ctx.vdis.path(vdi)), distro, rec["name_label"])
                ctx.progress((i + 1) / max(1, len(disks)))
            with ctx.store.transaction():
                for d, vdi in zip(disks, created):
                    ctx.store.create("VBD", {"VM": vm, "VDI": vdi, "userdevice": d["device"],
                                             "bootable": d["bootable"], "mode": "RW",
                                             "type": "Disk"})
                other = {k: v for k, v in ctx.store.get("VM", vm)["other_config"].items()
                         if k != "disks"}
                ctx.store.update("VM", vm, {"is_a_template": False, "other_config": other})
            for vdi in created:
                await ctx.vdis.refresh(vdi)
        except BaseException:
            for vdi in created:
                if ctx.store.find("VDI", vdi) is not None:
                    await ctx.vdis.destroy(vdi)
            raise
    return ""


# --- power state ---------------------------------------------------------------------------
_REPOSITORY_SCHEMES = ("http://", "https://", "ftp://", "nfs:")


def _check_install(vm: str, rec: dict) -> None:
    """eliloader's first round needs a repository to fetch the installer from (chapter 6)."""
    if rec["PV_bootloader"] != "eliloader":
        return
    repo = rec["other_config"].get("install-repository", "")
    if not repo:
        raise XenAPIError("OPERATION_NOT_ALLOWED",
                          "set other-config:install-repository before starting an installer VM")
    if not repo.startswith(_REPOSITORY_SCHEMES):
        raise XenAPIError("INVALID_VALUE", "install-repository", repo)


def _after_install_round(ctx: Ctx, vm: str) -> None:
    """eliloader advances install-round and hands over to pygrub (RHEL/CentOS 4.5/5.0)."""
    rec = ctx.store.get("VM", vm)
    if rec["PV_bootloader"] != "eliloader":
        return
    oc = rec["other_config"]
    current = int(oc.get("install-round", "1")) if oc.get("install-round", "1").isdigit() else 1
    ctx.store.update("VM", vm, {"PV_bootloader": "pygrub",
                                "other_config": {**oc, "install-round": str(current + 1)}})


def _assert_can_boot_here(ctx: Ctx) -> None:
    """A new domain (start or resume) needs an enabled host: host.disable stops new ones."""
    if not ctx.store.get("host", ctx.host.host_ref)["enabled"]:
        raise XenAPIError("HOST_DISABLED", ctx.host.host_ref)


@table.message("VM.start", _VM, ("start_paused", BOOL), ("force", BOOL))
async def vm_start(ctx: Ctx, vm: str, start_paused: bool, force: bool) -> str:
    rec = _vm(ctx, vm)
    _not_template(vm, rec, "start")
    require("start", vm, rec)
    _assert_can_boot_here(ctx)
    _check_install(vm, rec)
    async with ctx.operation("VM", vm, "start"):
        dom = await ctx.services.domains.start(ctx.lifecycle.domain_config(vm), start_paused)
        try:
            with ctx.store.transaction():
                ctx.lifecycle.enter(vm, "Paused" if start_paused else "Running", dom=dom)
                _after_install_round(ctx, vm)
        except BaseException:
            await dom.shutdown(clean=False)
            raise
    return ""


@table.message("VM.start_on", _VM, ("host", Ref("host")), ("start_paused", BOOL),
               ("force", BOOL))
async def vm_start_on(ctx: Ctx, vm: str, host: str, start_paused: bool, force: bool) -> str:
    ctx.store.get("host", host)
    return await vm_start(ctx, vm, start_paused, force)


@table.message("VM.pause", _VM)
async def vm_pause(ctx: Ctx, vm: str) -> str:
    rec = _vm(ctx, vm)
    spec = require("pause", vm, rec)
    async with ctx.operation("VM", vm, "pause"):
        await ctx.lifecycle.domain(rec).pause()
        ctx.lifecycle.enter(vm, spec.to)
    return ""


@table.message("VM.unpause", _VM)
async def vm_unpause(ctx: Ctx, vm: str) -> str:
    rec = _vm(ctx, vm)
    spec = require("unpause", vm, rec)
    async with ctx.operation("VM", vm, "unpause"):
        await ctx.lifecycle.domain(rec).unpause()
        ctx.lifecycle.enter(vm, spec.to)
    return ""


async def _shutdown(ctx: Ctx, vm: str, clean: bool, op: str) -> str:
    rec = _vm(ctx, vm)
    spec = require(op, vm, rec, start=("Running",) if clean else None)
    async with ctx.operation("VM", vm, op):
        if rec["power_state"] == "Suspended":
            if rec["suspend_VDI"] != NULL_REF and ctx.store.find("VDI", rec["suspend_VDI"]):
                await ctx.vdis.destroy(rec["suspend_VDI"])
            ctx.store.update("VM", vm, {"suspend_VDI": NULL_REF})
        else:
            dom = ctx.services.domains.get(rec["uuid"])
            if dom is not None:
                await dom.shutdown(clean)
        ctx.lifecycle.enter(vm, spec.to)
    return ""


@table.message("VM.clean_shutdown", _VM)
async def vm_clean_shutdown(ctx: Ctx, vm: str) -> str:
    return await _shutdown(ctx, vm, True, "clean_shutdown")


@table.message("VM.hard_shutdown", _VM)
async def vm_hard_shutdown(ctx: Ctx, vm: str) -> str:
    return await _shutdown(ctx, vm, False, "hard_shutdown")


@table.message("VM.shutdown", _VM)
async def vm_shutdown(ctx: Ctx, vm: str) -> str:
    """Clean if the VM runs, hard otherwise (the newer API's single shutdown)."""
    rec = _vm(ctx, vm)
    return await _shutdown(ctx, vm, rec["power_state"] == "Running", "shutdown")


async def _reboot(ctx: Ctx, vm: str, clean: bool, op: str) -> str:
    rec = _vm(ctx, vm)
    spec = require(op, vm, rec)
    async with ctx.operation("VM", vm, op):
        dom = ctx.lifecycle.domain(rec)
        await dom.reboot(clean)
        await dom.unpause()
        ctx.lifecycle.enter(vm, spec.to, dom=dom)
    return ""


@table.message("VM.clean_reboot", _VM)
async def vm_clean_reboot(ctx: Ctx, vm: str) -> str:
    return await _reboot(ctx, vm, True, "clean_reboot")


@table.message("VM.hard_reboot", _VM)
async def vm_hard_reboot(ctx: Ctx, vm: str) -> str:
    return await _reboot(ctx, vm, False, "hard_reboot")


@table.message("VM.suspend", _VM)
async def vm_suspend(ctx: Ctx, vm: str) -> str:
    rec = _vm(ctx, vm)
    spec = require("suspend", vm, rec)
    async with ctx.operation("VM", vm, "suspend"):
        vdi = await _suspend_image(ctx, rec, f"Suspend image for {rec['name_label']}")
        try:
            await ctx.lifecycle.domain(rec).suspend(str(ctx.vdis.path(vdi)))
        except BaseException:
            await ctx.vdis.destroy(vdi)
            raise
        ctx.lifecycle.enter(vm, spec.to, suspend_vdi=vdi)
    return ""


@table.message("VM.resume", _VM, ("start_paused", BOOL), ("force", BOOL))
async def vm_resume(ctx: Ctx, vm: str, start_paused: bool, force: bool) -> str:
    rec = _vm(ctx, vm)
    require("resume", vm, rec)
    _assert_can_boot_here(ctx)
    async with ctx.operation("VM", vm, "resume"):
        vdi = rec["suspend_VDI"]
        if vdi == NULL_REF or ctx.store.find("VDI", vdi) is None:
            raise XenAPIError("VDI_MISSING", NULL_REF, vdi)
        try:
            dom = await ctx.services.domains.resume(ctx.lifecycle.domain_config(vm),
                                                 str(ctx.vdis.path(vdi)), start_paused)
        except (OSError, ValueError) as e:
            raise XenAPIError("INTERNAL_ERROR", f"cannot resume from the suspend image: {e}") \
                from None
        with ctx.store.transaction():
            ctx.lifecycle.enter(vm, "Paused" if start_paused else "Running", dom=dom)
            ctx.store.update("VM", vm, {"suspend_VDI": NULL_REF})
        await ctx.vdis.destroy(vdi)
    return ""


@table.message("VM.resume_on", _VM, ("host", Ref("host")), ("start_paused", BOOL),
               ("force", BOOL))
async def vm_resume_on(ctx: Ctx, vm: str, host: str, start_paused: bool, force: bool) -> str:
    ctx.store.get("host", host)
    return await vm_resume(ctx, vm, start_paused, force)


@table.message("VM.pool_migrate", _VM, ("host", Ref("host")), ("options", MapOf(STRING, STRING)))
async def vm_pool_migrate(ctx: Ctx, vm: str, host: str, options: dict) -> str:
    """Live migration inside the pool. This pool is one host, so the destination is this host:
    a localhost migration, as xapi makes one: the domain's memory moves to a new domain (a new
    domid) and the old one ends; the VM stays Running throughout."""
    rec = _vm(ctx, vm)
    spec = require("pool_migrate", vm, rec)
    if not ctx.store.get("host", host)["enabled"]:
        raise XenAPIError("HOST_DISABLED", host)
    async with ctx.operation("VM", vm, "pool_migrate"):
        dom = await ctx.lifecycle.migrate_here(vm)
        ctx.lifecycle.enter(vm, spec.to, dom=dom)
    return ""


@table.message("VM.assert_operation_valid", _VM, ("op", STRING))
def vm_assert_operation_valid(ctx: Ctx, vm: str, op: str) -> str:
    """The error `op` would meet now, or nothing (Xen Orchestra asks before evacuating)."""
    rec = _vm(ctx, vm)
    if op in VM_OPERATIONS:
        require(op, vm, rec)
    elif op not in rec["allowed_operations"]:
        raise XenAPIError("OPERATION_NOT_ALLOWED", f"{op} is not possible on VM {vm} now")
    return ""


@table.message("VM.set_bios_strings", _VM, ("value", MapOf(STRING, STRING)))
def vm_set_bios_strings(ctx: Ctx, vm: str, value: dict) -> str:
    """Once, on a halted VM, as xapi (the strings a guest sees in its SMBIOS tables)."""
    rec = _vm(ctx, vm)
    if rec["power_state"] != "Halted":
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    if rec["bios_strings"]:
        raise XenAPIError("VM_BIOS_STRINGS_ALREADY_SET", vm)
    if any(len(v) > 512 for v in value.values()):
        raise XenAPIError("INVALID_VALUE", "bios_strings", "a value over 512 characters")
    ctx.store.update("VM", vm, {"bios_strings": dict(value)})
    return ""


_MEMORY = ("memory_static_min", "memory_dynamic_min", "memory_dynamic_max", "memory_static_max")


@table.message("VM.set_memory_limits", _VM, ("static_min", INT), ("static_max", INT),
               ("dynamic_min", INT), ("dynamic_max", INT))
def vm_set_memory_limits(ctx: Ctx, vm: str, static_min: int, static_max: int,
                         dynamic_min: int, dynamic_max: int) -> str:
    """All four limits at once, as xapi: static_min <= dynamic_min <= dynamic_max <=
    static_max; a running VM keeps its static limits."""
    rec = _vm(ctx, vm)
    new = dict(zip(_MEMORY, (static_min, dynamic_min, dynamic_max, static_max)))
    if not static_min <= dynamic_min <= dynamic_max <= static_max or static_min < 0:
        raise XenAPIError("MEMORY_CONSTRAINT_VIOLATION",
                          "Memory limits must satisfy: static_min <= dynamic_min <= "
                          "dynamic_max <= static_max")
    if rec["power_state"] != "Halted" and any(
            new[k] != rec[k] for k in ("memory_static_min", "memory_static_max")):
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    ctx.store.update("VM", vm, new)
    return ""


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)
