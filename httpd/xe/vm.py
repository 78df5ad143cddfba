"""VM lifecycle and device commands, event-wait and data sources, on the standard XenAPI calls."""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Iterator

from ..model.datamodel import CLASSES
from ..model.xtypes import NULL_REF
from .client import ApiFailure, XeError
from .core import UUID_RE, Ctx, UsageError, class_of, command, format_record
from .fields import find_param, matches
from .generic import filter_records

__all__ = ["select", "select_one", "parse_size", "vbd_record"]

_OWN = {"uuid", "vm", "multiple", "force", "minimal"}


@contextlib.contextmanager
def _destroyed_on_error(ctx: Ctx, destroy: str, ref: str) -> Iterator[None]:
    """A command that fails (or is interrupted) half way leaves nothing it made behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(ApiFailure, XeError):
            ctx.call(destroy, ref)
        raise


def select(ctx: Ctx, cls: str = "VM", own: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The objects a command acts on: uuid=, vm=<name or uuid>, or field filters (xe's rules:
    several matches need --multiple)."""
    key = "vm" if cls == "VM" else cls.lower()
    filters = {k: v for k, v in ctx.params.items() if k not in _OWN and k not in own
               and k != key}
    if "uuid" in ctx.params:
        filters["uuid"] = ctx.params["uuid"]
    chosen = ctx.params.get(key)
    if chosen is not None:
        filters["uuid" if UUID_RE.match(chosen) else "name-label"] = chosen
    if not filters:
        raise UsageError(f"say which {key}: uuid=, {key}=<name or uuid> or field=value "
                         f"filters", ctx.cmd.name)
    for k in filters:
        if find_param(cls, k) is None:
            raise UsageError(f"unknown parameter {k}= for {ctx.cmd.name}", ctx.cmd.name)
    if "uuid" in filters:
        ctx.by_uuid(cls, filters["uuid"])   # a bad uuid says so (UUID_INVALID), as xe does
    found = filter_records(ctx, cls, filters)
    if cls == "VM" and "is-a-template" not in filters and not ctx.cmd.name.startswith("template"):
        if len(found) > 1:
            found = [(r, v) for r, v in found if not v.get("is_a_template")] or found
    if not found:
        raise XeError(f"Error: no matching {key}s found ({_show(filters)})")
    if len(found) > 1 and not ctx.flag("multiple"):
        raise XeError(f"Error: {len(found)} {key}s match ({_show(filters)}): give uuid= or "
                      f"add --multiple")
    return found


def select_one(ctx: Ctx, cls: str = "VM", own: tuple[str, ...] = ()) -> tuple[str, dict]:
    """For commands that act on exactly one object (clone, copy, export...)."""
    found = select(ctx, cls, own)
    if len(found) != 1:
        raise XeError(f"Error: {ctx.cmd.name} works on one {cls.lower()} at a time, "
                      f"{len(found)} match")
    return found[0]


def _show(filters: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in filters.items())


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(i?B?)\s*", text, re.I)
    if not m:
        raise XeError(f"Error: bad size {text!r} (bytes, or with a unit: 512MiB, 10GiB)")
    n, unit, _ = m.groups()
    mult = 1024 ** "KMGTP".index(unit.upper()) * 1024 if unit else 1
    return int(float(n) * mult)


def _vm_cmd(name: str, help: str, optn: tuple[str, ...] = (), flags: tuple[str, ...] = ()):
    return command(name, help, optn=optn, selector="VM", flags=("multiple", *flags))


def _each(ctx: Ctx, fn) -> None:
    for ref, rec in select(ctx, "VM", ctx.cmd.optn):
        fn(ref, rec)


@_vm_cmd("vm-start", "Start the selected VM(s).", optn=("paused",), flags=("force",))
def vm_start(ctx: Ctx) -> None:
    paused, force = ctx.flag("paused"), ctx.flag("force")
    _each(ctx, lambda ref, rec: ctx.call("VM.start", ref, paused, force))


@_vm_cmd("vm-shutdown", "Shut the selected VM(s) down: cleanly, or at once with --force.",
         flags=("force",))
def vm_shutdown(ctx: Ctx) -> None:
    msg = "VM.hard_shutdown" if ctx.flag("force") else "VM.clean_shutdown"
    _each(ctx, lambda ref, rec: ctx.call(msg, ref))


@_vm_cmd("vm-reboot", "Reboot the selected VM(s): cleanly, or at once with --force.",
         flags=("force",))
def vm_reboot(ctx: Ctx) -> None:
    msg = "VM.hard_reboot" if ctx.flag("force") else "VM.clean_reboot"
    _each(ctx, lambda ref, rec: ctx.call(msg, ref))


@_vm_cmd("vm-suspend", "Suspend the selected VM(s).")
def vm_suspend(ctx: Ctx) -> None:
    _each(ctx, lambda ref, rec: ctx.call("VM.suspend", ref))


@_vm_cmd("vm-resume", "Resume the selected suspended VM(s).", optn=("paused",),
         flags=("force",))
def vm_resume(ctx: Ctx) -> None:
    paused, force = ctx.flag("paused"), ctx.flag("force")
    _each(ctx, lambda ref, rec: ctx.call("VM.resume", ref, paused, force))


@_vm_cmd("vm-pause", "Pause the selected running VM(s).")
def vm_pause(ctx: Ctx) -> None:
    _each(ctx, lambda ref, rec: ctx.call("VM.pause", ref))


@_vm_cmd("vm-unpause", "Unpause the selected paused VM(s).")
def vm_unpause(ctx: Ctx) -> None:
    _each(ctx, lambda ref, rec: ctx.call("VM.unpause", ref))


@_vm_cmd("vm-destroy", "Destroy the selected VM record(s), leaving their disks.")
def vm_destroy(ctx: Ctx) -> None:
    _each(ctx, lambda ref, rec: ctx.call("VM.destroy", ref))


@_vm_cmd("vm-uninstall", "Destroy the selected VM(s) and the disks only they use "
         "(asks first on a terminal unless --force).", flags=("force",))
def vm_uninstall(ctx: Ctx) -> None:
    for ref, rec in select(ctx, "VM", ()):
        _uninstall(ctx, ref, rec)


def _uninstall(ctx: Ctx, ref: str, rec: dict) -> None:
    """Destroy VM (or snapshot) `ref` and the disks no other VM uses."""
    vdis = []
    for vbd in rec.get("VBDs", []):
        vb = ctx.lookup("VBD", vbd)
        if not vb or vb.get("empty") or vb.get("type") != "Disk" or vb["VDI"] == NULL_REF:
            continue
        vdi = ctx.lookup("VDI", vb["VDI"])
        if vdi is None:
            continue
        users = {ctx.lookup("VBD", b)["VM"] for b in vdi.get("VBDs", [])  # type: ignore
                 if ctx.lookup("VBD", b)}
        if users <= {ref}:
            vdis.append((vb["VDI"], vdi))
    if sys.stdin.isatty() and not ctx.flag("force"):
        ctx.out.write(f"The following items are about to be destroyed\n"
                      f"VM : {rec['uuid']} ({rec['name_label']})\n")
        for _, vdi in vdis:
            ctx.out.write(f"VDI: {vdi['uuid']} ({vdi['name_label']})\n")
        ctx.out.write("Type 'yes' to continue\n")
        ctx.out.flush()
        if sys.stdin.readline().strip() != "yes":
            raise XeError("Aborted", status=1)
    if rec.get("power_state") not in ("Halted", None):
        ctx.call("VM.hard_shutdown", ref)
    ctx.call("VM.destroy", ref)
    for vref, _ in vdis:
        ctx.call("VDI.destroy", vref)


def _uuid_of(ctx: Ctx, cls: str, ref: str) -> str:
    return str(ctx.call(f"{cls}.get_uuid", ref))


def _sr(ctx: Ctx, required: bool = False) -> str:
    if ctx.get("sr-uuid"):
        return ctx.by_uuid("SR", ctx.params["sr-uuid"])
    if ctx.get("sr-name-label"):
        return ctx.resolve("SR", ctx.params["sr-name-label"])
    if required:
        pools = list(ctx.call("pool.get_all"))  # type: ignore[arg-type]
        sr = str(ctx.call("pool.get_default_SR", pools[0])) if pools else NULL_REF
        if sr == NULL_REF:
            raise XeError("Error: no sr-uuid= given and the pool has no default SR")
        return sr
    return NULL_REF


@command("vm-install", "Install a new VM from a template: clone it, point its disks at the SR, "
         "provision them.", reqd=("new-name-label",),
         optn=("template", "template-uuid", "template-name-label", "sr-uuid", "sr-name-label"))
def vm_install(ctx: Ctx) -> None:
    name = ctx.need("new-name-label")
    tpl_text = ctx.get("template-uuid") or ctx.get("template-name-label") or ctx.get("template")
    if not tpl_text:
        raise UsageError("give template=<name or uuid> (or template-uuid=)", ctx.cmd.name)
    if UUID_RE.match(tpl_text):
        tpl = ctx.by_uuid("VM", tpl_text)
    else:
        refs = [r for r in ctx.call("VM.get_by_name_label", tpl_text)  # type: ignore
                if ctx.lookup("VM", r) and ctx.lookup("VM", r)["is_a_template"]]
        if not refs:
            raise XeError(f"Error: no template named {tpl_text!r} (see 'xe template-list')")
        if len(refs) > 1:
            raise XeError(f"Error: several templates are named {tpl_text!r}: use template-uuid=")
        tpl = refs[0]
    sr = _sr(ctx)
    vm = str(ctx.call("VM.clone", tpl, name))
    with _destroyed_on_error(ctx, "VM.destroy", vm):
        if sr != NULL_REF:
            sr_uuid = _uuid_of(ctx, "SR", sr)
            disks = (dict(ctx.call("VM.get_other_config", vm))  # type: ignore[arg-type]
                     .get("disks"))
            if disks:
                import xml.etree.ElementTree as ET   # only here: kept out of xe's start

                root = ET.fromstring(disks)
                for d in root.iter("disk"):
                    d.set("sr", sr_uuid)
                ctx.call("VM.remove_from_other_config", vm, "disks")
                ctx.call("VM.add_to_other_config", vm, "disks",
                         ET.tostring(root, encoding="unicode"))
        ctx.call("VM.provision", vm)
    ctx.out.write(_uuid_of(ctx, "VM", vm) + "\n")


@_vm_cmd("vm-clone", "Clone a VM (fast, on the same SR); prints the new uuid.",
         optn=("new-name-label", "new-name-description"))
def vm_clone(ctx: Ctx) -> None:
    _new_from(ctx, "VM.clone")


def _new_from(ctx: Ctx, message: str) -> None:
    """clone and snapshot: a new VM named new-name-label; prints its uuid."""
    name = ctx.need("new-name-label")
    ref, _ = select_one(ctx, "VM", ctx.cmd.optn)
    new = str(ctx.call(message, ref, name))
    if ctx.get("new-name-description") is not None:
        ctx.call("VM.set_name_description", new, ctx.params["new-name-description"])
    ctx.out.write(_uuid_of(ctx, "VM", new) + "\n")


@_vm_cmd("vm-snapshot", "Snapshot a VM's disks (reflinks where the file system can); prints "
         "the snapshot's uuid.", optn=("new-name-label", "new-name-description"))
def vm_snapshot(ctx: Ctx) -> None:
    _new_from(ctx, "VM.snapshot")


def _snapshot(ctx: Ctx) -> tuple[str, dict]:
    ref = ctx.resolve("VM", ctx.get("snapshot-uuid") or ctx.need("uuid"))
    rec = dict(ctx.call("VM.get_record", ref))  # type: ignore[arg-type]
    if not rec.get("is_a_snapshot"):
        raise XeError(f"Error: {rec['uuid']} is not a snapshot (see 'xe snapshot-list')")
    return ref, rec


@command("snapshot-revert", "Revert a VM to one of its snapshots (its disks and settings); the "
         "VM ends up halted, or suspended for a checkpoint.", optn=("snapshot-uuid", "uuid"))
def snapshot_revert(ctx: Ctx) -> None:
    ref, _ = _snapshot(ctx)
    ctx.call("VM.revert", ref)


@command("snapshot-destroy", "Destroy a snapshot's record, leaving its disks (see "
         "snapshot-uninstall).", optn=("snapshot-uuid", "uuid"))
def snapshot_destroy(ctx: Ctx) -> None:
    ref, _ = _snapshot(ctx)
    ctx.call("VM.destroy", ref)


@command("snapshot-uninstall", "Destroy a snapshot and the disks only it uses (asks first on a "
         "terminal unless --force).", optn=("snapshot-uuid", "uuid"), flags=("force",))
def snapshot_uninstall(ctx: Ctx) -> None:
    ref, rec = _snapshot(ctx)
    _uninstall(ctx, ref, rec)


@_vm_cmd("vm-checkpoint", "Snapshot a running VM with its memory (reverting resumes it); "
         "prints the checkpoint's uuid.", optn=("new-name-label", "new-name-description"))
def vm_checkpoint(ctx: Ctx) -> None:
    _new_from(ctx, "VM.checkpoint")


@_vm_cmd("vm-memory-limits-set", "Set a VM's four memory limits (bytes, or 512MiB...).",
         optn=("static-min", "static-max", "dynamic-min", "dynamic-max"))
def vm_memory_limits_set(ctx: Ctx) -> None:
    sizes = [parse_size(ctx.need(k)) for k in ("static-min", "static-max", "dynamic-min",
                                               "dynamic-max")]
    _each(ctx, lambda ref, rec: ctx.call("VM.set_memory_limits", ref, *sizes))


@_vm_cmd("vm-memory-set", "Give a halted VM memory= (static and dynamic maximum, dynamic "
         "minimum).", optn=("memory",))
def vm_memory_set(ctx: Ctx) -> None:
    size = parse_size(ctx.need("memory"))
    _each(ctx, lambda ref, rec: ctx.call("VM.set_memory_limits", ref,
                                         min(int(rec["memory_static_min"]), size),
                                         size, size, size))


@_vm_cmd("vm-copy", "Copy a VM with full copies of its disks (to sr-uuid= if given); prints "
         "the new uuid.", optn=("new-name-label", "new-name-description", "sr-uuid"))
def vm_copy(ctx: Ctx) -> None:
    name = ctx.need("new-name-label")
    ref, _ = select_one(ctx, "VM", ctx.cmd.optn)
    new = str(ctx.call("VM.copy", ref, name, _sr(ctx)))
    if ctx.get("new-name-description") is not None:
        ctx.call("VM.set_name_description", new, ctx.params["new-name-description"])
    ctx.out.write(_uuid_of(ctx, "VM", new) + "\n")


def _vdi_record(ctx: Ctx, sr: str, name: str, size: int, vtype: str = "user") -> dict:
    return {"name_label": name, "name_description": "", "SR": sr, "virtual_size": size,
            "type": vtype, "sharable": ctx.flag("sharable"), "read_only": ctx.flag("read-only"),
            "other_config": {}, "xenstore_data": {}, "sm_config": {}, "tags": []}


def vbd_record(vm: str, vdi: str, device: str, *, bootable=False, mode="RW", vtype="Disk",
                empty=False, unpluggable=True) -> dict:
    return {"VM": vm, "VDI": vdi, "userdevice": device, "bootable": bootable, "mode": mode,
            "type": vtype, "empty": empty, "unpluggable": unpluggable, "other_config": {},
            "qos_algorithm_type": "", "qos_algorithm_params": {}}


def _free_device(ctx: Ctx, cls: str, refs: list[str], field: str) -> str:
    used = {(ctx.lookup(cls, r) or {}).get(field) for r in refs}
    n = 0
    while str(n) in used:
        n += 1
    return str(n)


@_vm_cmd("vm-disk-add", "Add a new disk to a VM (plugged at once if it runs); prints the new "
         "VDI's uuid.",
         optn=("disk-size", "device", "sr-uuid", "sr-name-label", "name-label", "bootable"))
def vm_disk_add(ctx: Ctx) -> None:
    size = parse_size(ctx.need("disk-size"))
    ref, rec = select_one(ctx, "VM", ctx.cmd.optn)
    device = ctx.get("device") or _free_device(ctx, "VBD", rec.get("VBDs", []), "userdevice")
    sr = _sr(ctx, required=True)
    name = ctx.get("name-label") or f"{rec['name_label']} {device}"
    vdi = str(ctx.call("VDI.create", _vdi_record(ctx, sr, name, size)))
    with _destroyed_on_error(ctx, "VDI.destroy", vdi):
        vbd = str(ctx.call("VBD.create", vbd_record(ref, vdi, device,
                                                     bootable=ctx.flag("bootable"))))
        with _destroyed_on_error(ctx, "VBD.destroy", vbd):
            if rec.get("power_state") == "Running":      # as xe does: plugged at once
                ctx.call("VBD.plug", vbd)
    ctx.out.write(_uuid_of(ctx, "VDI", vdi) + "\n")


def _vif_create(ctx: Ctx, vm: str, vm_rec: dict) -> None:
    net = ctx.resolve("network", ctx.get("network-uuid") or ctx.need("network"))
    device = ctx.get("device") or _free_device(ctx, "VIF", vm_rec.get("VIFs", []), "device")
    rec = {"device": device, "network": net, "VM": vm, "MAC": ctx.get("mac", "") or "",
           "MTU": int(ctx.get("mtu") or 1500), "other_config": {},
           "qos_algorithm_type": "", "qos_algorithm_params": {}}
    vif = str(ctx.call("VIF.create", rec))
    ctx.out.write(_uuid_of(ctx, "VIF", vif) + "\n")


@_vm_cmd("vm-vif-add", "Add a network interface to a VM; prints the new VIF's uuid.",
         optn=("network-uuid", "network", "device", "mac", "mtu"))
def vm_vif_add(ctx: Ctx) -> None:
    ref, rec = select_one(ctx, "VM", ctx.cmd.optn)
    _vif_create(ctx, ref, rec)


@command("vif-create", "Create a VIF on a VM; prints its uuid.",
         reqd=("vm-uuid", "network-uuid"), optn=("device", "mac", "mtu"))
def vif_create(ctx: Ctx) -> None:
    vm = ctx.by_uuid("VM", ctx.need("vm-uuid"))
    _vif_create(ctx, vm, dict(ctx.call("VM.get_record", vm)))  # type: ignore[arg-type]


@command("vdi-create", "Create a VDI; prints its uuid.",
         reqd=("name-label", "virtual-size"),
         optn=("sr-uuid", "type", "sharable", "read-only"))
def vdi_create(ctx: Ctx) -> None:
    sr = _sr(ctx, required=True)
    rec = _vdi_record(ctx, sr, ctx.need("name-label"), parse_size(ctx.need("virtual-size")),
                      (ctx.get("type") or "user").lower())
    ctx.out.write(_uuid_of(ctx, "VDI", str(ctx.call("VDI.create", rec))) + "\n")


@command("vbd-create", "Attach a VDI (or an empty CD drive) to a VM; prints the VBD's uuid.",
         reqd=("vm-uuid", "device"),
         optn=("vdi-uuid", "bootable", "type", "mode", "unpluggable"))
def vbd_create(ctx: Ctx) -> None:
    vm = ctx.by_uuid("VM", ctx.need("vm-uuid"))
    vdi = ctx.by_uuid("VDI", ctx.params["vdi-uuid"]) if ctx.get("vdi-uuid") else NULL_REF
    vtype = (ctx.get("type") or "Disk").capitalize().replace("Cd", "CD")
    rec = vbd_record(vm, vdi, ctx.need("device"), bootable=ctx.flag("bootable"),
                      mode=(ctx.get("mode") or "RW").upper(), vtype=vtype,
                      empty=vdi == NULL_REF,
                      unpluggable=(ctx.get("unpluggable") or "true").lower() == "true")
    ctx.out.write(_uuid_of(ctx, "VBD", str(ctx.call("VBD.create", rec))) + "\n")


# --- event-wait ---------------------------------------------------------------------------------

@command("event-wait", "Wait until an object of class= has field=value (field=/=value: differs) "
         "for every condition given.", reqd=("class",), optn=("timeout",), free=True)
def event_wait(ctx: Ctx) -> None:
    cls = class_of(ctx.need("class"))
    if cls is None:
        raise XeError(f"Error: unknown class {ctx.params['class']!r}")
    conds = []
    for k, v in ctx.params.items():
        if k in ("class", "timeout"):
            continue
        negate = v.startswith("/=")
        p = find_param(cls, k)
        if p is None:
            raise XeError(f"Error: unknown field {k!r} for class {ctx.params['class']}")
        conds.append((p, v[2:] if negate else v, negate))
    timeout = float(ctx.get("timeout") or 0) or None
    deadline = time.monotonic() + timeout if timeout else None
    token = ""
    event_class = CLASSES[cls].event_class
    while True:
        wait = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
        got = dict(ctx.call("event.from", [event_class], token, wait))  # type: ignore
        token = str(got.get("token", token))
        for ev in got.get("events", []):
            snap = ev.get("snapshot")
            if ev.get("operation") == "del" or not isinstance(snap, dict):
                continue
            if all(matches(p, ctx.render(p, snap), v) != neg for p, v, neg in conds):
                return
        if deadline is not None and time.monotonic() >= deadline:
            raise XeError("Error: timed out waiting for the condition")


# --- data sources ------------------------------------------------------------------------------

def _the_host(ctx: Ctx) -> str:
    text = ctx.get("uuid") or ctx.get("host")
    if text:
        return ctx.resolve("host", text)
    hosts = list(ctx.call("host.get_all"))  # type: ignore[arg-type]
    if len(hosts) != 1:
        raise UsageError("give host=<name or uuid>", ctx.cmd.name)
    return hosts[0]


def _print_sources(ctx: Ctx, sources: list) -> None:
    for ds in sources:
        items = [(f"{k.replace('_', '-')} ( RO)", _fmt(v)) for k, v in dict(ds).items()]
        ctx.out.write(format_record(items) + "\n\n\n")


def _fmt(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


@command("host-data-source-list", "List the data sources a host records.",
         optn=("host", "uuid"))
def host_ds_list(ctx: Ctx) -> None:
    _print_sources(ctx, list(ctx.call("host.get_data_sources", _the_host(ctx))))  # type: ignore


@command("host-data-source-query", "Show the latest value of a host's data source.",
         reqd=("data-source",), optn=("host", "uuid"))
def host_ds_query(ctx: Ctx) -> None:
    v = ctx.call("host.query_data_source", _the_host(ctx), ctx.need("data-source"))
    ctx.out.write(f"{float(v):f}\n")  # type: ignore[arg-type]


@_vm_cmd("vm-data-source-list", "List the data sources a VM records.")
def vm_ds_list(ctx: Ctx) -> None:
    ref, _ = select_one(ctx, "VM", ())
    _print_sources(ctx, list(ctx.call("VM.get_data_sources", ref)))  # type: ignore


@_vm_cmd("vm-data-source-query", "Show the latest value of a VM's data source.",
         optn=("data-source",))
def vm_ds_query(ctx: Ctx) -> None:
    name = ctx.need("data-source")
    ref, _ = select_one(ctx, "VM", ctx.cmd.optn)
    v = ctx.call("VM.query_data_source", ref, name)
    ctx.out.write(f"{float(v):f}\n")  # type: ignore[arg-type]

