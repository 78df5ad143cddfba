"""SRs and VDIs: sr-scan, vdi-resize, vdi-copy, vdi-clone, on the standard XenAPI calls."""

from __future__ import annotations

from .core import Ctx, command
from .vm import parse_size

__all__: list[str] = []


def _uuid(ctx: Ctx, cls: str, ref: object) -> None:
    ctx.out.write(str(ctx.call(f"{cls}.get_uuid", ref)) + "\n")


@command("sr-scan", "Look for new or removed disk files in an SR (an ISO library: new *.iso).",
         reqd=("uuid",))
def sr_scan(ctx: Ctx) -> None:
    ctx.call("SR.scan", ctx.by_uuid("SR", ctx.need("uuid")))


@command("vdi-resize", "Grow a VDI to disk-size= (bytes, or 10GiB...); --online for a disk "
         "plugged into a running VM.", reqd=("uuid", "disk-size"), flags=("online",))
def vdi_resize(ctx: Ctx) -> None:
    vdi = ctx.by_uuid("VDI", ctx.need("uuid"))
    msg = "VDI.resize_online" if ctx.flag("online") else "VDI.resize"
    ctx.call(msg, vdi, parse_size(ctx.need("disk-size")))


@command("vdi-copy", "Copy a VDI (its allocated data) to sr-uuid= (default: its own SR); "
         "prints the copy's uuid.", reqd=("uuid",), optn=("sr-uuid",))
def vdi_copy(ctx: Ctx) -> None:
    vdi = ctx.by_uuid("VDI", ctx.need("uuid"))
    sr = ctx.by_uuid("SR", ctx.params["sr-uuid"]) if ctx.get("sr-uuid") \
        else ctx.call("VDI.get_SR", vdi)
    _uuid(ctx, "VDI", ctx.call("VDI.copy", vdi, sr))


@command("vdi-clone", "Clone a VDI on its SR; prints the clone's uuid.", reqd=("uuid",),
         optn=("new-name-label", "new-name-description"))
def vdi_clone(ctx: Ctx) -> None:
    new = ctx.call("VDI.clone", ctx.by_uuid("VDI", ctx.need("uuid")), {})
    if ctx.get("new-name-label") is not None:
        ctx.call("VDI.set_name_label", new, ctx.params["new-name-label"])
    if ctx.get("new-name-description") is not None:
        ctx.call("VDI.set_name_description", new, ctx.params["new-name-description"])
    _uuid(ctx, "VDI", new)
