"""The commands every class has: -list, -param-list/-get/-set/-add/-remove/-clear, -destroy."""

from __future__ import annotations

from ..model.datamodel import CLASSES
from ..model.xtypes import MapOf, SetOf
from .client import ApiFailure, XeError
from .core import COMMANDS, Command, Ctx, UsageError, is_container, list_params, print_records
from .fields import BadValue, Param, find_param, matches, params_of, parse_value, xe_class_name

__all__ = ["register_all", "LIST_COLUMNS", "filter_records"]

# What `<class>-list` shows without params= (a presentation choice; names are checked against
# the datamodel at import). Classes not named here show name-label/name-description if they have
# them, else every scalar field.
LIST_COLUMNS: dict[str, tuple[str, ...]] = {
    "VM": ("name_label", "power_state"),
    "SR": ("name_label", "name_description", "type", "content_type"),
    "VDI": ("name_label", "name_description", "SR", "virtual_size", "type"),
    "VBD": ("VM", "VDI", "userdevice", "empty"),
    "VIF": ("VM", "device", "MAC", "network"),
    "PIF": ("device", "MAC", "currently_attached", "VLAN", "network"),
    "PBD": ("host", "SR", "device_config", "currently_attached"),
    "network": ("name_label", "name_description", "bridge"),
    "console": ("VM", "protocol", "location"),
    "task": ("name_label", "status", "progress"),
    "host": ("name_label", "name_description"),
    "session": ("this_user", "last_active", "originator"),
}


def _default_columns(cls: str) -> tuple[str, ...]:
    spec = CLASSES[cls]
    if cls in LIST_COLUMNS:
        names: list[str] = []
        for fname in LIST_COLUMNS[cls]:
            fs = spec.by_name[fname]   # KeyError at import = the datamodel changed
            names += [p.name for p in params_of(cls) if p.field is fs and p.kind != "metrics"]
        return tuple(names)
    if "name_label" in spec.by_name:
        return ("name-label", "name-description")
    return tuple(p.name for p in params_of(cls)
                 if p.kind == "field" and p.name != "uuid" and not is_container(p))


def filter_records(ctx: Ctx, cls: str, filters: dict[str, str]) -> list[tuple[str, dict]]:
    conds: list[tuple[Param, str]] = []
    for k, v in filters.items():
        p = find_param(cls, k)
        if p is None:
            raise XeError(f"Error: unknown field {k!r} for {xe_class_name(cls)} "
                          f"(see 'xe {xe_class_name(cls)}-param-list')")
        conds.append((p, v))
    uuid = filters.get("uuid")
    if uuid is not None and len(filters) == 1:
        try:
            ref = ctx.by_uuid(cls, uuid)
        except ApiFailure as e:
            if e.code in ("UUID_INVALID", "HANDLE_INVALID"):
                return []
            raise
        recs = {ref: dict(ctx.call(f"{cls}.get_record", ref))}  # type: ignore[arg-type]
    else:
        recs = ctx.all_records(cls)
    return [(ref, rec) for ref, rec in recs.items()
            if all(matches(p, ctx.render(p, rec), v) for p, v in conds)]


def run_list(ctx: Ctx, cls: str, implicit: dict[str, str] | None = None) -> None:
    params = dict(ctx.params)
    wanted = params.pop("params", None)
    filters = {**(implicit or {}), **params}
    cols = list_params(cls, wanted, _default_columns(cls))
    rows = [rec for _, rec in filter_records(ctx, cls, filters)]
    print_records(ctx, rows, cols, ctx.flag("minimal"))


def _object(ctx: Ctx, cls: str) -> tuple[str, dict]:
    uuid = ctx.need("uuid")
    ref = ctx.by_uuid(cls, uuid)
    return ref, dict(ctx.call(f"{cls}.get_record", ref))  # type: ignore[arg-type]


def _param(ctx: Ctx, cls: str, name: str) -> Param:
    p = find_param(cls, name)
    if p is None:
        raise XeError(f"Error: unknown parameter {name!r} for {xe_class_name(cls)} "
                      f"(see 'xe {xe_class_name(cls)}-param-list')")
    return p


def _settable(ctx: Ctx, cls: str, name: str) -> Param:
    p = _param(ctx, cls, name)
    if not p.settable:
        raise XeError(f"Error: parameter {p.name} of {xe_class_name(cls)} is read-only")
    return p


def _value(ctx: Ctx, p: Param, text: str):
    try:
        return parse_value(p.field.xtype, text, lambda c, t: ctx.resolve(c, t))
    except BadValue as e:
        raise XeError(f"Error: {p.name}: {e}") from None


def param_list(ctx: Ctx, cls: str) -> None:
    _, rec = _object(ctx, cls)
    print_records(ctx, [rec], list(params_of(cls)), False)


def param_get(ctx: Ctx, cls: str) -> None:
    _, rec = _object(ctx, cls)
    p = _param(ctx, cls, ctx.need("param-name"))
    key = ctx.get("param-key")
    if key is not None:
        if is_container(p) != "map":
            raise XeError(f"Error: param-key= applies to maps only; {p.name} is not a map")
        holder = rec if p.kind == "field" else (ctx.lookup(p.field.xtype.cls, rec[p.field.name])
                                                 or {})
        m = holder.get(p.spec.name) or {}
        if key not in m:
            raise XeError(f"Error: key {key!r} not found in map {p.name}")
        ctx.out.write(f"{m[key]}\n")
        return
    ctx.out.write(ctx.render(p, rec) + "\n")


def param_set(ctx: Ctx, cls: str) -> None:
    ref, rec = _object(ctx, cls)
    todo = {k: v for k, v in ctx.params.items() if k != "uuid"}
    if not todo:
        raise UsageError("give at least one name=value (or map:key=value) to set", ctx.cmd.name)
    for k, v in todo.items():
        if ":" in k:
            mname, _, key = k.partition(":")
            p = _settable(ctx, cls, mname)
            if is_container(p) != "map":
                raise XeError(f"Error: {p.name} is not a map: {k}= needs a map parameter")
            fname = p.field.name
            if key in (rec.get(fname) or {}):
                ctx.call(f"{cls}.remove_from_{fname}", ref, key)
            ctx.call(f"{cls}.add_to_{fname}", ref, key, v)
            rec.setdefault(fname, {})[key] = v
        else:
            p = _settable(ctx, cls, k)
            if is_container(p) == "map":
                raise XeError(f"Error: {p.name} is a map: set its keys with {p.name}:KEY=VALUE")
            ctx.call(f"{cls}.set_{p.field.name}", ref, _value(ctx, p, v))


def _container(ctx: Ctx, cls: str) -> tuple[str, dict, Param]:
    ref, rec = _object(ctx, cls)
    p = _settable(ctx, cls, ctx.need("param-name"))
    return ref, rec, p


def param_add(ctx: Ctx, cls: str) -> None:
    ref, rec, p = _container(ctx, cls)
    fname = p.field.name
    kind = is_container(p)
    if kind == "map":
        pairs = {k: v for k, v in ctx.params.items() if k not in ("uuid", "param-name")}
        if not pairs:
            raise UsageError(f"give the key=value pairs to add to {p.name}", ctx.cmd.name)
        for k, v in pairs.items():
            ctx.call(f"{cls}.add_to_{fname}", ref, k, v)
    elif kind == "set":
        value = ctx.need("param-key")
        elem = p.field.xtype.elem  # type: ignore[union-attr]
        try:
            v = parse_value(elem, value, lambda c, t: ctx.resolve(c, t))
        except BadValue as e:
            raise XeError(f"Error: {p.name}: {e}") from None
        ctx.call(f"{cls}.add_{fname}", ref, v)
    else:
        raise XeError(f"Error: {p.name} is neither a map nor a set")


def param_remove(ctx: Ctx, cls: str) -> None:
    ref, rec, p = _container(ctx, cls)
    fname = p.field.name
    key = ctx.need("param-key")
    kind = is_container(p)
    if kind == "map":
        if key not in (rec.get(fname) or {}):
            raise XeError(f"Error: key {key!r} not found in map {p.name}")
        ctx.call(f"{cls}.remove_from_{fname}", ref, key)
    elif kind == "set":
        ctx.call(f"{cls}.remove_{fname}", ref, key)
    else:
        raise XeError(f"Error: {p.name} is neither a map nor a set")


def param_clear(ctx: Ctx, cls: str) -> None:
    ref, _, p = _container(ctx, cls)
    xt = p.field.xtype
    value: object = {} if isinstance(xt, MapOf) else [] if isinstance(xt, SetOf) else None
    if value is None:
        if xt.name != "string":
            raise XeError(f"Error: {p.name} cannot be cleared (only maps, sets and strings)")
        value = ""
    ctx.call(f"{cls}.set_{p.field.name}", ref, value)


def destroy(ctx: Ctx, cls: str) -> None:
    ref, _ = _object(ctx, cls)
    ctx.call(f"{cls}.destroy", ref)


def _bind(fn, cls: str, implicit: dict[str, str] | None = None):
    if implicit is not None:
        return lambda ctx: fn(ctx, cls, implicit)
    return lambda ctx: fn(ctx, cls)


def register_all() -> None:
    for cls, spec in CLASSES.items():
        x = xe_class_name(cls)
        _add(f"{x}-list", _bind(run_list, cls), f"List the {x} objects; filter with "
             f"field=value, choose fields with params=a,b|all.", cls, free=True,
             optn=("params",), flags=("minimal",))
        _add(f"{x}-param-list", _bind(param_list, cls), f"Show every parameter of a {x}.", cls,
             reqd=("uuid",))
        _add(f"{x}-param-get", _bind(param_get, cls), f"Show one parameter of a {x} (one key "
             f"of a map with param-key=).", cls, reqd=("uuid", "param-name"),
             optn=("param-key",))
        _add(f"{x}-param-set", _bind(param_set, cls), f"Set parameters of a {x}: name=value, "
             f"map:key=value.", cls, reqd=("uuid",), free=True)
        _add(f"{x}-param-add", _bind(param_add, cls), f"Add key=value pairs to a map "
             f"parameter, or param-key= to a set parameter, of a {x}.", cls,
             reqd=("uuid", "param-name"), optn=("param-key",), free=True)
        _add(f"{x}-param-remove", _bind(param_remove, cls), f"Remove a key from a map "
             f"parameter, or a value from a set parameter, of a {x}.", cls,
             reqd=("uuid", "param-name", "param-key"))
        _add(f"{x}-param-clear", _bind(param_clear, cls), f"Empty a map, set or string "
             f"parameter of a {x}.", cls, reqd=("uuid", "param-name"))
        if spec.destroyable:
            _add(f"{x}-destroy", _bind(destroy, cls), f"Destroy a {x}.", cls, reqd=("uuid",))
    # Templates are VMs with is-a-template=true; snapshots are templates with is-a-snapshot.
    _add("template-list", _bind(run_list, "VM", {"is-a-template": "true",
                                                 "is-a-snapshot": "false"}),
         "List the templates (VMs with is-a-template=true, snapshots aside).", "VM", free=True,
         optn=("params",), flags=("minimal",))
    _add("snapshot-list", _bind(run_list, "VM", {"is-a-snapshot": "true"}),
         "List the snapshots (filter with snapshot-of=<VM uuid>, ...).", "VM", free=True,
         optn=("params",), flags=("minimal",))
    for suffix in ("param-list", "param-get", "param-set", "param-add", "param-remove",
                   "param-clear"):
        base = COMMANDS[f"vm-{suffix}"]
        for kind in ("template", "snapshot"):
            _add(f"{kind}-{suffix}", base.run, base.help.replace("a vm", f"a {kind}"), "VM",
                 reqd=base.reqd, optn=base.optn, free=base.free)
    # vm-list leaves templates out unless asked about them, like xe.
    vm_list = COMMANDS["vm-list"]
    vm_list.run = lambda ctx: run_list(ctx, "VM", {} if any(
        k.replace("_", "-").lower() == "is-a-template" for k in ctx.params)
        else {"is-a-template": "false"})
    vm_list.help = ("List the VMs (not templates: see template-list); filter with field=value, "
                    "choose fields with params=a,b|all.")


def _add(name: str, run, help: str, cls: str, *, reqd=(), optn=(), free=False, flags=()):
    if name not in COMMANDS:
        COMMANDS[name] = Command(name, run, help, tuple(reqd), tuple(optn), None, free,
                                 tuple(flags), True, False, cls)
