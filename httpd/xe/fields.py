"""xe parameters, derived from the datamodel: names, markers, rendering and parsing.

Nothing here lists fields by hand. A field `name_label` is the parameter `name-label`; its
marker says the kind (` ` scalar, `M` map, `S` set) and whether `param-set` may change it (`RW`
only for fields the datamodel declares RW, else `RO`), as xe prints `( RO)`, `(MRW)`, `(SRO)`.
A reference is shown as the uuid it points to; a reference named after its class (VBD.VM)
becomes `vm-uuid` plus `vm-name-label`, as xe spells them. A class's metrics records
(VM.metrics -> VM_metrics, VM.guest_metrics -> VM_guest_metrics) lend their fields as extra
read-only parameters (`memory-actual`, `networks`...), fetched only when asked for.
Parameter names match loosely (case, `-` and `_` ignored), so xe's `dom-id` finds `domid`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from ..model.datamodel import CLASSES, POWER_STATE, RW, ClassSpec, FieldSpec
from ..model.xtypes import BOOL, DATETIME, FLOAT, INT, NULL_REF, Enum, MapOf, Ref, SetOf, XType, \
    format_datetime

__all__ = ["Param", "params_of", "find_param", "norm", "xe_class_name", "render_value",
           "parse_value", "NOT_IN_DB"]

NOT_IN_DB = "<not in database>"
# xe prints a VM's power state in lower case ("running"), and the guide's scripts compare it so.
_LOWER_ENUMS = {POWER_STATE.name}


def norm(name: str) -> str:
    return name.replace("-", "").replace("_", "").lower()


def xe_class_name(cls: str) -> str:
    return cls.lower().replace("_", "-")


def cli_name(field: str) -> str:
    return field.replace("_", "-")


@dataclass(frozen=True)
class Param:
    name: str                     # as xe prints it: name-label, vm-uuid
    field: FieldSpec              # the field that holds (or leads to) the value
    kind: str                     # "field" | "ref-name" | "metrics"
    sub: FieldSpec | None = None  # ref-name: the target's name_label; metrics: the metrics field

    @property
    def spec(self) -> FieldSpec:
        return self.sub if self.kind == "metrics" and self.sub else self.field

    @property
    def settable(self) -> bool:
        return self.kind == "field" and self.field.qualifier == RW

    @property
    def marker(self) -> str:
        xt = self.spec.xtype
        kind = "M" if isinstance(xt, MapOf) else "S" if isinstance(xt, SetOf) else " "
        return f"({kind}{'RW' if self.settable else 'RO'})"

    @property
    def label(self) -> str:
        return f"{self.name} {self.marker}"



def _ref_target(fs: FieldSpec) -> str | None:
    return fs.xtype.cls if isinstance(fs.xtype, Ref) else None


@lru_cache(maxsize=None)
def params_of(cls: str) -> tuple[Param, ...]:
    spec: ClassSpec = CLASSES[cls]
    out: list[Param] = []
    taken: set[str] = set()

    def add(p: Param) -> None:
        if norm(p.name) not in taken:
            taken.add(norm(p.name))
            out.append(p)

    for fs in spec.fields:
        target = _ref_target(fs)
        if target and fs.name.lower() == target.lower() and target in CLASSES:
            add(Param(f"{xe_class_name(target)}-uuid", fs, "field"))
            tname = CLASSES[target].by_name.get("name_label")
            if tname is not None:
                add(Param(f"{xe_class_name(target)}-name-label", fs, "ref-name", tname))
        else:
            add(Param(cli_name(fs.name), fs, "field"))
    for fs in spec.fields:
        target = _ref_target(fs)
        if target and target.startswith(cls + "_") and target in CLASSES:
            for sub in CLASSES[target].fields:
                if sub.name in ("uuid", "last_updated", "other_config"):
                    continue
                add(Param(cli_name(sub.name), fs, "metrics", sub))
    return tuple(out)


def find_param(cls: str, name: str) -> Param | None:
    n = norm(name)
    for p in params_of(cls):
        if norm(p.name) == n:
            return p
    return None


# --- rendering --------------------------------------------------------------------------------

Lookup = Callable[[str, str], "dict | None"]   # (class, ref) -> record or None


def render_value(xt: XType, v: Any, lookup: Lookup) -> str:
    if isinstance(xt, MapOf):
        if not isinstance(v, dict):
            return str(v)
        return "; ".join(f"{k}: {render_value(xt.val, x, lookup)}" for k, x in v.items())
    if isinstance(xt, SetOf):
        if not isinstance(v, (list, tuple)):
            return str(v)
        return "; ".join(render_value(xt.elem, x, lookup) for x in v)
    if isinstance(xt, Ref):
        if not v or v == NULL_REF:
            return NOT_IN_DB
        rec = lookup(xt.cls, v) if xt.cls in CLASSES else None
        return rec.get("uuid", v) if rec else NOT_IN_DB if xt.cls in CLASSES else str(v)
    if xt is BOOL or isinstance(v, bool):
        return "true" if v in (True, "true", "1", 1) else "false"
    if isinstance(v, _dt.datetime):
        return format_datetime(v)
    if isinstance(xt, Enum) and xt.name in _LOWER_ENUMS:
        return str(v).lower()
    if v is None:
        return ""
    return str(v)


def render_param(p: Param, rec: dict, lookup: Lookup) -> str:
    fs = p.field
    if p.kind == "field":
        return render_value(fs.xtype, rec.get(fs.name), lookup)
    ref = rec.get(fs.name)
    target = _ref_target(fs)
    other = lookup(target, ref) if target and ref and ref != NULL_REF else None
    if p.kind == "ref-name":
        return other.get("name_label", "") if other else NOT_IN_DB
    if other is None:
        return NOT_IN_DB if not isinstance(p.spec.xtype, (MapOf, SetOf)) else ""
    return render_value(p.spec.xtype, other.get(p.spec.name), lookup)


def matches(p: Param, shown: str, wanted: str) -> bool:
    xt = p.spec.xtype
    if isinstance(xt, Enum) or xt is BOOL:
        return shown.lower() == wanted.lower()
    return shown == wanted


# --- parsing (param-set) ----------------------------------------------------------------------

class BadValue(ValueError):
    pass


def parse_value(xt: XType, text: str, resolve_ref: Callable[[str, str], str]) -> Any:
    """A command-line string -> the wire value for a field of type `xt`."""
    if xt is INT:
        try:
            return int(text, 10)
        except ValueError:
            raise BadValue(f"expected an integer, got {text!r}") from None
    if xt is FLOAT:
        try:
            return float(text)
        except ValueError:
            raise BadValue(f"expected a number, got {text!r}") from None
    if xt is BOOL:
        t = text.strip().lower()
        if t in ("true", "yes", "on", "1"):
            return True
        if t in ("false", "no", "off", "0"):
            return False
        raise BadValue(f"expected true or false, got {text!r}")
    if isinstance(xt, Enum):
        for v in xt.values:
            if v.lower() == text.lower():
                return v
        raise BadValue(f"expected one of {', '.join(xt.values)}, got {text!r}")
    if isinstance(xt, Ref):
        if text in ("", NULL_REF, NOT_IN_DB):
            return NULL_REF
        if text.startswith("OpaqueRef:"):
            return text
        return resolve_ref(xt.cls, text)
    if xt is DATETIME:
        return text
    if isinstance(xt, SetOf):
        items = [s.strip() for s in text.replace(";", ",").split(",") if s.strip()]
        return [parse_value(xt.elem, s, resolve_ref) for s in items]
    return text
