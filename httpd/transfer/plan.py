"""What an export holds: the records and disk files of a VM, in either XVA layout."""

from __future__ import annotations

from xva.appliance import Appliance, VBDSpec, VDISpec, VMSpec

from ..core.context import Ctx
from ..model.xtypes import NULL_REF
from .metadata import export_objects, ova_xml

__all__ = ["appliance_for", "block_export"]


def block_export(ctx: Ctx, vm: str, *, with_disks: bool = True
                 ) -> tuple[bytes, list[tuple[str, str, int]]]:
    """ova.xml and (Ref:N, path, size) per disk for xapi's block layout."""
    objects, ids = export_objects(ctx.store, vm)
    disks = []
    for obj in objects:
        if obj.cls == "VDI" and with_disks:
            real = next(r for r, i in ids.items() if i == obj.id)
            disks.append((obj.id, str(ctx.vdis.path(real)), obj.snapshot["virtual_size"]))
    return ova_xml(objects), disks


def appliance_for(ctx: Ctx, vm: str) -> tuple[Appliance, dict[str, str]]:
    """The guide's 0.1 appliance description of `vm`, and vdi name -> file."""
    rec = ctx.store.get("VM", vm)
    vbds, vdis, files = [], [], {}
    for vbd in rec["VBDs"]:
        b = ctx.store.get("VBD", vbd)
        if b["empty"] or b["VDI"] == NULL_REF:
            continue
        ud = b["userdevice"]
        device = f"sd{chr(ord('a') + int(ud))}" if ud.isdigit() and int(ud) < 26 else ud
        name = f"vdi_{device}"
        vdi = ctx.store.get("VDI", b["VDI"])
        vbds.append(VBDSpec(device, "root" if b["bootable"] else "data",
                            "ro" if b["mode"] == "RO" else "w", name))
        vdis.append(VDISpec(name, vdi["virtual_size"], f"file://{device}"))
        files[name] = str(ctx.vdis.path(b["VDI"]))
    hvm = bool(rec["HVM_boot_policy"])
    spec = VMSpec(name=rec["uuid"], label=rec["name_label"], shortdesc=rec["name_description"],
                  mem_set=rec["memory_static_max"], vcpus=rec["VCPUs_max"], is_hvm=hvm,
                  kernel_boot_cmdline=rec["PV_args"], vbds=tuple(vbds))
    return Appliance(spec, tuple(vdis)), files
