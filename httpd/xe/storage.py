"""SRs, VDIs, networks and the host: sr-scan, vdi-resize/-copy/-clone, network-create,
host-enable/-disable, on the standard XenAPI calls."""

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


@command("vdi-snapshot", "Snapshot a VDI (a reflink where the file system can); prints the "
         "snapshot's uuid.", reqd=("uuid",))
def vdi_snapshot(ctx: Ctx) -> None:
    _uuid(ctx, "VDI", ctx.call("VDI.snapshot", ctx.by_uuid("VDI", ctx.need("uuid")), {}))


@command("network-create", "Create a network (a bridge of its own); prints its uuid.",
         reqd=("name-label",), optn=("name-description", "MTU", "bridge"))
def network_create(ctx: Ctx) -> None:
    rec = {"name_label": ctx.need("name-label"),
           "name_description": ctx.get("name-description") or "",
           "MTU": int(ctx.get("MTU") or 1500), "other_config": {}}
    if ctx.get("bridge"):
        rec["bridge"] = ctx.params["bridge"]
    _uuid(ctx, "network", ctx.call("network.create", rec))


def _host(ctx: Ctx) -> object:
    return (ctx.resolve("host", ctx.params["host"]) if ctx.get("host")
            else list(ctx.call("host.get_all"))[0])  # type: ignore[call-overload]


@command("host-disable", "Disable the host: it starts no more VMs (HOST_DISABLED).",
         optn=("host",))
def host_disable(ctx: Ctx) -> None:
    ctx.call("host.disable", _host(ctx))


@command("host-enable", "Enable the host again.", optn=("host",))
def host_enable(ctx: Ctx) -> None:
    ctx.call("host.enable", _host(ctx))
