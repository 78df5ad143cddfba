"""A VM's disks, CD drives and NICs: vm-disk-list/-remove, vm-vif-list, vm-cd-add/-remove/
-insert/-eject/-list, vbd-plug/-unplug/-insert/-eject, on the standard XenAPI calls."""

from __future__ import annotations

from ..model.xtypes import NULL_REF
from .client import XeError
from .core import Ctx, UsageError, command, format_record, list_params
from .vm import select_one, vbd_record

__all__: list[str] = []


def _vbds(ctx: Ctx, rec: dict, kind: str) -> list[tuple[str, dict]]:
    """The VM's VBDs of type `kind` (Disk or CD), in device order."""
    out = []
    for ref in rec.get("VBDs", []):
        vbd = ctx.lookup("VBD", ref)
        if vbd is not None and vbd.get("type") == kind:
            out.append((ref, vbd))
    return sorted(out, key=lambda rv: (len(rv[1]["userdevice"]), rv[1]["userdevice"]))


def _block(ctx: Ctx, title: str, cls: str, rec: dict, wanted: str | None,
           default: tuple[str, ...]) -> None:
    params = list_params(cls, wanted, default)
    ctx.out.write(f"{title}:\n")
    ctx.out.write(format_record([(p.label, ctx.render(p, rec)) for p in params]) + "\n\n\n")


@command("vm-disk-list", "List a VM's disks: each one's VBD and VDI (vbd-params=, vdi-params= "
         "choose the fields; --vbd-only, --vdi-only).",
         optn=("vbd-params", "vdi-params"), selector="VM",
         flags=("multiple", "vbd-only", "vdi-only"))
def vm_disk_list(ctx: Ctx) -> None:
    _, rec = select_one(ctx, "VM", ("vbd-params", "vdi-params"))
    for _, vbd in _vbds(ctx, rec, "Disk"):
        n = vbd["userdevice"]
        if not ctx.flag("vdi-only"):
            _block(ctx, f"Disk {n} VBD", "VBD", vbd, ctx.get("vbd-params"),
                   ("vm-name-label", "userdevice", "currently-attached"))
        vdi = ctx.lookup("VDI", vbd["VDI"]) if vbd["VDI"] != NULL_REF else None
        if vdi is not None and not ctx.flag("vbd-only"):
            _block(ctx, f"Disk {n} VDI", "VDI", vdi, ctx.get("vdi-params"),
                   ("name-label", "sr-name-label", "virtual-size"))


@command("vm-vif-list", "List a VM's network interfaces (params= chooses the fields).",
         optn=("params",), selector="VM", flags=("multiple",))
def vm_vif_list(ctx: Ctx) -> None:
    _, rec = select_one(ctx, "VM", ("params",))
    params = list_params("VIF", ctx.get("params"),
                         ("device", "MAC", "network-name-label", "currently-attached"))
    vifs = [v for v in (ctx.lookup("VIF", r) for r in rec.get("VIFs", [])) if v is not None]
    for vif in sorted(vifs, key=lambda v: (len(v["device"]), v["device"])):
        ctx.out.write(format_record([(p.label, ctx.render(p, vif)) for p in params]) + "\n\n\n")


def _vbd(ctx: Ctx) -> str:
    return ctx.by_uuid("VBD", ctx.need("uuid"))


@command("vbd-plug", "Plug a VBD into its running VM (hot-plug).", reqd=("uuid",))
def vbd_plug(ctx: Ctx) -> None:
    ctx.call("VBD.plug", _vbd(ctx))


@command("vbd-unplug", "Unplug a VBD from its running VM (--force: without the guest's "
         "consent).", reqd=("uuid",), flags=("force",))
def vbd_unplug(ctx: Ctx) -> None:
    ctx.call("VBD.unplug_force" if ctx.flag("force") else "VBD.unplug", _vbd(ctx))


@command("vbd-eject", "Eject the disc from a CD drive.", reqd=("uuid",))
def vbd_eject(ctx: Ctx) -> None:
    ctx.call("VBD.eject", _vbd(ctx))


@command("vbd-insert", "Insert a disc (an ISO VDI) into an empty CD drive.",
         reqd=("uuid", "vdi-uuid"))
def vbd_insert(ctx: Ctx) -> None:
    ctx.call("VBD.insert", _vbd(ctx), ctx.by_uuid("VDI", ctx.need("vdi-uuid")))


def _cd_drive(ctx: Ctx, own: tuple[str, ...]) -> str:
    _, rec = select_one(ctx, "VM", own)
    drives = _vbds(ctx, rec, "CD")
    if not drives:
        raise XeError(f"Error: VM {rec['name_label']} has no CD drive (add one with "
                      f"'xe vbd-create type=CD vm-uuid={rec['uuid']} device=3')")
    return drives[0][0]


@command("vm-cd-insert", "Insert an ISO (cd-name=<VDI name or uuid>) into the VM's CD drive.",
         reqd=("cd-name",), selector="VM", flags=("multiple",))
def vm_cd_insert(ctx: Ctx) -> None:
    vbd = _cd_drive(ctx, ("cd-name",))
    ctx.call("VBD.insert", vbd, ctx.resolve("VDI", ctx.need("cd-name")))


@command("vm-cd-eject", "Eject the disc from the VM's CD drive.", selector="VM",
         flags=("multiple",))
def vm_cd_eject(ctx: Ctx) -> None:
    ctx.call("VBD.eject", _cd_drive(ctx, ()))


@command("vm-cd-list", "List the VM's CD drives and their discs.", selector="VM",
         flags=("multiple",))
def vm_cd_list(ctx: Ctx) -> None:
    _, rec = select_one(ctx, "VM", ())
    drives = _vbds(ctx, rec, "CD")
    if not drives:
        raise UsageError(f"VM {rec['name_label']} has no CD drive", ctx.cmd.name)
    for _, vbd in drives:
        n = vbd["userdevice"]
        _block(ctx, f"CD {n} VBD", "VBD", vbd, None, ("vm-name-label", "userdevice", "empty"))
        vdi = ctx.lookup("VDI", vbd["VDI"]) if not vbd["empty"] else None
        if vdi is not None:
            _block(ctx, f"CD {n} VDI", "VDI", vdi, None, ("name-label", "sr-name-label"))


@command("vm-disk-remove", "Remove the VM's disk at device= and destroy it (its VDI too).",
         reqd=("device",), selector="VM", flags=("multiple",))
def vm_disk_remove(ctx: Ctx) -> None:
    _, rec = select_one(ctx, "VM", ("device",))
    found = [(r, v) for r, v in _vbds(ctx, rec, "Disk") if v["userdevice"] == ctx.need("device")]
    if not found:
        raise XeError(f"Error: VM {rec['name_label']} has no disk at device {ctx.params['device']}"
                      f" (see 'xe vm-disk-list uuid={rec['uuid']}')")
    vbd, vb = found[0]
    if vb.get("currently_attached"):
        ctx.call("VBD.unplug", vbd)
    ctx.call("VBD.destroy", vbd)
    if vb["VDI"] != NULL_REF:
        ctx.call("VDI.destroy", vb["VDI"])


@command("vm-cd-add", "Add a CD drive at device= holding cd-name= (an ISO VDI's name or uuid).",
         reqd=("cd-name", "device"), selector="VM", flags=("multiple",))
def vm_cd_add(ctx: Ctx) -> None:
    ref, _ = select_one(ctx, "VM", ("cd-name", "device"))
    vdi = ctx.resolve("VDI", ctx.need("cd-name"))
    ctx.call("VBD.create", vbd_record(ref, vdi, ctx.need("device"), mode="RO", vtype="CD"))


@command("vm-cd-remove", "Remove the CD drive that holds cd-name= (the disc's VDI stays).",
         reqd=("cd-name",), selector="VM", flags=("multiple",))
def vm_cd_remove(ctx: Ctx) -> None:
    _, rec = select_one(ctx, "VM", ("cd-name",))
    vdi = ctx.resolve("VDI", ctx.need("cd-name"))
    drives = [r for r, v in _vbds(ctx, rec, "CD") if v["VDI"] == vdi]
    if not drives:
        raise XeError(f"Error: no CD drive of VM {rec['name_label']} holds {ctx.params['cd-name']}")
    for vbd in drives:
        ctx.call("VBD.destroy", vbd)
