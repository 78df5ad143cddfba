"""VBD and VIF messages: create with sane device numbers and MACs, hot plug and unplug.

As the guide says, create alone changes nothing inside a running guest (currently_attached
stays false); plug makes the device appear in the domain, unplug removes it.
"""

from __future__ import annotations

import re

from ..model.datamodel import CLASSES
from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..core.implicit import ANY_RECORD, check_record
from ..core.devices import new_mac, vbd_device
from ..core.nic_settings import check_nic_settings, effective_mtu
from ..core.operations import refresh_allowed
from ..model.xtypes import NULL_REF, STRING, MapOf, Ref

table = MessageTable()

__all__ = ["table"]

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _running_domain(ctx: Ctx, vm: str):
    rec = ctx.store.get("VM", vm)
    if rec["power_state"] != "Running":
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "running", rec["power_state"].lower())
    dom = ctx.services.domains.get(rec["uuid"])
    if dom is None:
        raise XenAPIError("INTERNAL_ERROR", f"VM {rec['uuid']} has no running domain")
    return dom


def _free_device(used: set[str]) -> str:
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


# --- VBD ------------------------------------------------------------------------------------
@table.message("VBD.create", ("args", ANY_RECORD))
def vbd_create(ctx: Ctx, record: dict) -> str:
    fields = check_record(ctx, CLASSES["VBD"], record)
    vm = fields.get("VM", NULL_REF)
    vm_rec = ctx.store.get("VM", vm)
    vdi = fields.get("VDI", NULL_REF)
    empty = fields.get("empty", False) or vdi == NULL_REF
    if vdi != NULL_REF:
        vdi_rec = ctx.store.get("VDI", vdi)
        if vdi_rec["read_only"] and fields.get("mode", "RW") == "RW":
            raise XenAPIError("VDI_READ_ONLY", vdi)
    elif fields.get("type", "Disk") == "Disk":
        raise XenAPIError("HANDLE_INVALID", "VDI", vdi)
    used = {ctx.store.get("VBD", b)["userdevice"] for b in vm_rec["VBDs"]}
    userdevice = fields.get("userdevice", "") or "autodetect"
    if userdevice == "autodetect":
        userdevice = _free_device(used)
    elif userdevice in used:
        raise XenAPIError("DEVICE_ALREADY_EXISTS", userdevice)
    fields.update({"userdevice": userdevice, "empty": empty, "device": vbd_device(userdevice)})
    vbd = ctx.store.create("VBD", {**fields, "currently_attached": False})
    refresh_allowed(ctx.store, "VBD", vbd)
    return vbd


@table.message("VBD.plug", ("self", Ref("VBD")))
async def vbd_plug(ctx: Ctx, vbd: str) -> str:
    rec = ctx.store.get("VBD", vbd)
    if rec["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_ATTACHED", vbd)
    dom = _running_domain(ctx, rec["VM"])
    device = vbd_device(rec["userdevice"])
    disk = ctx.lifecycle.disk_spec(vbd)
    if disk is not None:
        await dom.plug_disk(disk)
    ctx.store.update("VBD", vbd, {"currently_attached": True, "device": device})
    refresh_allowed(ctx.store, "VBD", vbd)
    return ""


@table.message("VBD.unplug", ("self", Ref("VBD")))
async def vbd_unplug(ctx: Ctx, vbd: str) -> str:
    rec = ctx.store.get("VBD", vbd)
    if not rec["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_DETACHED", vbd)
    if not rec["unpluggable"]:
        raise XenAPIError("VBD_NOT_UNPLUGGABLE", vbd)
    dom = _running_domain(ctx, rec["VM"])
    await dom.unplug_disk(vbd_device(rec["userdevice"]))
    ctx.store.update("VBD", vbd, {"currently_attached": False})
    refresh_allowed(ctx.store, "VBD", vbd)
    return ""


@table.message("VBD.unplug_force", ("self", Ref("VBD")))
async def vbd_unplug_force(ctx: Ctx, vbd: str) -> str:
    rec = ctx.store.get("VBD", vbd)
    if rec["currently_attached"] and not rec["unpluggable"]:
        ctx.store.update("VBD", vbd, {"unpluggable": True})
    return await vbd_unplug(ctx, vbd)


@table.message("VBD.destroy", ("self", Ref("VBD")))
def vbd_destroy(ctx: Ctx, vbd: str) -> str:
    if ctx.store.get("VBD", vbd)["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_ATTACHED", vbd)
    ctx.store.destroy("VBD", vbd)
    return ""


# --- VUSB -----------------------------------------------------------------------------------
# No USB device is passed through here: there are no PUSBs, hence no USB groups, so a VUSB
# cannot be made and every call below answers HANDLE_INVALID, as on a host without USB devices.
@table.message("VUSB.create", ("VM", Ref("VM")), ("USB_group", Ref("USB_group")),
               ("other_config", MapOf(STRING, STRING)))
def vusb_create(ctx: Ctx, vm: str, group: str, other_config: dict) -> str:
    """A halted VM's USB device from a group (attached when the VM starts)."""
    rec = ctx.store.get("VM", vm)
    ctx.store.get("USB_group", group)
    if rec["power_state"] != "Halted":
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    return ctx.store.create("VUSB", {"VM": vm, "USB_group": group, "other_config": other_config})


@table.message("VUSB.unplug", ("self", Ref("VUSB")))
def vusb_unplug(ctx: Ctx, vusb: str) -> str:
    if not ctx.store.get("VUSB", vusb)["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_DETACHED", vusb)
    raise XenAPIError("OPERATION_NOT_ALLOWED", "this host does not pass USB devices through")


@table.message("VUSB.destroy", ("self", Ref("VUSB")))
def vusb_destroy(ctx: Ctx, vusb: str) -> str:
    if ctx.store.get("VUSB", vusb)["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_ATTACHED", vusb)
    ctx.store.destroy("VUSB", vusb)
    return ""


# --- removable media ------------------------------------------------------------------------
def _cd(ctx: Ctx, vbd: str) -> dict:
    rec = ctx.store.get("VBD", vbd)
    if rec["type"] != "CD":
        raise XenAPIError("VBD_NOT_REMOVABLE_MEDIA", vbd)
    return rec


async def _change_disc(ctx: Ctx, rec: dict, vdi: str) -> None:
    """The running domain's drive gets the disc (or loses it) first: if it refuses, the
    record keeps what the drive has."""
    if not rec["currently_attached"]:
        return
    dom = ctx.services.domains.get(ctx.store.get("VM", rec["VM"])["uuid"])
    if dom is not None:
        path = str(ctx.vdis.path(vdi)) if vdi != NULL_REF else ""
        await dom.change_cd(vbd_device(rec["userdevice"]), path)


@table.message("VBD.insert", ("self", Ref("VBD")), ("vdi", Ref("VDI")))
async def vbd_insert(ctx: Ctx, vbd: str, vdi: str) -> str:
    """Put a disc (an ISO's VDI) into an empty CD drive."""
    rec = _cd(ctx, vbd)
    ctx.store.get("VDI", vdi)
    if not rec["empty"]:
        raise XenAPIError("VBD_NOT_EMPTY", vbd)
    await _change_disc(ctx, rec, vdi)
    ctx.store.update("VBD", vbd, {"VDI": vdi, "empty": False})
    refresh_allowed(ctx.store, "VBD", vbd)
    return ""


@table.message("VBD.eject", ("self", Ref("VBD")))
async def vbd_eject(ctx: Ctx, vbd: str) -> str:
    rec = _cd(ctx, vbd)
    if rec["empty"]:
        raise XenAPIError("VBD_IS_EMPTY", vbd)
    await _change_disc(ctx, rec, NULL_REF)
    ctx.store.update("VBD", vbd, {"VDI": NULL_REF, "empty": True})
    refresh_allowed(ctx.store, "VBD", vbd)
    return ""


# --- VIF ------------------------------------------------------------------------------------
@table.message("VIF.create", ("args", ANY_RECORD))
def vif_create(ctx: Ctx, record: dict) -> str:
    fields = check_record(ctx, CLASSES["VIF"], record)
    vm_rec = ctx.store.get("VM", fields.get("VM", NULL_REF))
    net = ctx.store.get("network", fields.get("network", NULL_REF))
    used = {ctx.store.get("VIF", v)["device"] for v in vm_rec["VIFs"]}
    device = fields.get("device", "") or _free_device(used)
    if device in used:
        raise XenAPIError("DEVICE_ALREADY_EXISTS", device)
    check_nic_settings(fields.get("other_config", {}))
    mac = fields.get("MAC", "").lower()
    if mac and not _MAC.match(mac):
        raise XenAPIError("MAC_INVALID", mac)
    fields.update({"device": device, "MAC": mac or new_mac(), "MAC_autogenerated": not mac,
                   "MTU": fields.get("MTU") or net["MTU"]})
    vif = ctx.store.create("VIF", {**fields, "currently_attached": False})
    refresh_allowed(ctx.store, "VIF", vif)
    return vif


@table.message("VIF.plug", ("self", Ref("VIF")))
async def vif_plug(ctx: Ctx, vif: str) -> str:
    rec = ctx.store.get("VIF", vif)
    if rec["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_ATTACHED", vif)
    dom = _running_domain(ctx, rec["VM"])
    nic = ctx.lifecycle.nic_spec(vif)
    await dom.plug_nic(nic)
    ctx.store.update("VIF", vif, {"currently_attached": True, "MTU": nic.mtu})
    refresh_allowed(ctx.store, "VIF", vif)
    return ""


@table.message("VIF.unplug", ("self", Ref("VIF")))
async def vif_unplug(ctx: Ctx, vif: str) -> str:
    rec = ctx.store.get("VIF", vif)
    if not rec["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_DETACHED", vif)
    await _running_domain(ctx, rec["VM"]).unplug_nic(rec["device"])
    ctx.store.update("VIF", vif, {"currently_attached": False})
    refresh_allowed(ctx.store, "VIF", vif)
    return ""


@table.message("VIF.unplug_force", ("self", Ref("VIF")))
async def vif_unplug_force(ctx: Ctx, vif: str) -> str:
    return await vif_unplug(ctx, vif)


@table.message("VIF.destroy", ("self", Ref("VIF")))
def vif_destroy(ctx: Ctx, vif: str) -> str:
    if ctx.store.get("VIF", vif)["currently_attached"]:
        raise XenAPIError("DEVICE_ALREADY_ATTACHED", vif)
    ctx.store.destroy("VIF", vif)
    return ""


# --- other_config of VIFs and PIFs: the NIC keys are checked when set ----------------------
def _apply_pif(ctx: Ctx, pif: str) -> None:
    rec = ctx.store.get("PIF", pif)
    mtu = effective_mtu(rec["other_config"], rec["MTU"])
    if mtu != rec["MTU"]:
        ctx.store.update("PIF", pif, {"MTU": mtu})


def _nic_config_messages(cls: str) -> None:
    def set_other_config(ctx: Ctx, ref: str, value: dict) -> str:
        ctx.store.get(cls, ref)
        check_nic_settings(value)
        ctx.store.update(cls, ref, {"other_config": value})
        if cls == "PIF":
            _apply_pif(ctx, ref)
        return ""

    def add_to_other_config(ctx: Ctx, ref: str, key: str, value: str) -> str:
        rec = ctx.store.get(cls, ref)
        if key in rec["other_config"]:
            raise XenAPIError("MAP_DUPLICATE_KEY", cls, "other_config", rec["uuid"], key)
        return set_other_config(ctx, ref, {**rec["other_config"], key: value})

    this = ("self", Ref(cls))
    table.message(f"{cls}.set_other_config", this, ("value", MapOf(STRING, STRING)),
                  async_ok=False)(set_other_config)
    table.message(f"{cls}.add_to_other_config", this, ("key", STRING), ("value", STRING),
                  async_ok=False)(add_to_other_config)


_nic_config_messages("VIF")
_nic_config_messages("PIF")


@table.message("PIF.plug", ("self", Ref("PIF")))
def pif_plug(ctx: Ctx, pif: str) -> str:
    _apply_pif(ctx, pif)
    ctx.store.update("PIF", pif, {"currently_attached": True})
    return ""


@table.message("PIF.unplug", ("self", Ref("PIF")))
def pif_unplug(ctx: Ctx, pif: str) -> str:
    rec = ctx.store.get("PIF", pif)
    if rec["management"] or rec["disallow_unplug"]:
        raise XenAPIError("PIF_IS_MANAGEMENT_INTERFACE" if rec["management"]
                          else "PIF_DOES_NOT_ALLOW_UNPLUG", pif)
    ctx.store.update("PIF", pif, {"currently_attached": False})
    return ""


# --- free device numbers (what Ansible's modules and XenCenter pick from) -------------------
_VBD_DEVICES = 16     # userdevice 0..15, as xapi offers a PV guest
_VIF_DEVICES = 7      # device 0..6


def _unused(used: set[str], n: int) -> list[str]:
    return [str(i) for i in range(n) if str(i) not in used]


@table.message("VM.get_allowed_VBD_devices", ("vm", Ref("VM")))
def vm_allowed_vbd_devices(ctx: Ctx, vm: str) -> list[str]:
    """The userdevice numbers no VBD of the VM uses yet."""
    rec = ctx.store.get("VM", vm)
    return _unused({ctx.store.get("VBD", b)["userdevice"] for b in rec["VBDs"]}, _VBD_DEVICES)


@table.message("VM.get_allowed_VIF_devices", ("vm", Ref("VM")))
def vm_allowed_vif_devices(ctx: Ctx, vm: str) -> list[str]:
    """The device numbers no VIF of the VM uses yet."""
    rec = ctx.store.get("VM", vm)
    return _unused({ctx.store.get("VIF", v)["device"] for v in rec["VIFs"]}, _VIF_DEVICES)
