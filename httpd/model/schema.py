"""The machinery the object model is declared with: field and class specs, the registries
(`CLASSES` for the XenAPI's classes, `INTERNAL` for the agent's bookkeeping, `STORED` for
both) and the `xapi_class` decorator. The classes themselves are in `datamodel` (the
XenAPI's) and `bookkeeping` (the agent's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .xtypes import STRING, MapOf, Ref, SetOf, XType

__all__ = ["FieldSpec", "ClassSpec", "CLASSES", "INTERNAL", "STORED", "class_spec", "xapi_class",
           "f", "str_map", "refs", "RW", "RO", "SRO"]

RW, RO, SRO = "RW", "RO", "SRO"


@dataclass(frozen=True)
class FieldSpec:
    name: str
    xtype: XType
    qualifier: str
    doc: str = ""
    default: Any = None          # a value, or None for the type's default
    reverse: str | None = None   # for reverse sets: the field of the member class pointing here

    def __post_init__(self) -> None:
        if self.qualifier not in (RW, RO, SRO):
            raise ValueError(f"{self.name}: bad qualifier {self.qualifier}")
        if self.reverse and not (isinstance(self.xtype, SetOf) and isinstance(self.xtype.elem, Ref)):
            raise ValueError(f"{self.name}: a reverse field must be a set of refs")

    def make_default(self) -> Any:
        if self.default is None:
            return self.xtype.default()
        return self.default() if callable(self.default) else self.default

    @property
    def is_map(self) -> bool:
        return isinstance(self.xtype, MapOf)

    @property
    def is_set(self) -> bool:
        return isinstance(self.xtype, SetOf)


@dataclass(frozen=True)
class ClassSpec:
    name: str
    fields: tuple[FieldSpec, ...]
    doc: str
    creatable: bool            # has a generic `create(record)` unless an explicit one replaces it
    destroyable: bool
    next_events: bool          # the guide: task and metrics classes send no event.next events

    @property
    def by_name(self) -> dict[str, FieldSpec]:
        return _BY_NAME[self.name]

    @property
    def event_class(self) -> str:
        return self.name.lower()


CLASSES: dict[str, ClassSpec] = {}     # the XenAPI's classes
INTERNAL: dict[str, ClassSpec] = {}    # the agent's own bookkeeping: stored, never on the API
STORED: dict[str, ClassSpec] = {}      # both: what the database holds
_BY_NAME: dict[str, dict[str, FieldSpec]] = {}
_BY_LOWER: dict[str, ClassSpec] = {}


@dataclass(frozen=True)
class _Declared:
    """What :func:`f` leaves on a class for :func:`xapi_class` to read."""
    xtype: XType
    qualifier: str
    doc: str
    default: Any
    reverse: str | None


def f(xtype: XType, qualifier: str = RW, doc: str = "", default: Any = None,
      reverse: str | None = None) -> Any:
    """A field declaration, as an annotated class attribute: ``name: Any = f(...)``."""
    return _Declared(xtype, qualifier, doc, default, reverse)


def xapi_class(*, creatable: bool = False, destroyable: bool = False, next_events: bool = True,
               internal: bool = False) -> Callable[[type], type]:
    """Declare a class. `internal`: kept in the database (in the same transactions as the
    objects it is about) but on no API: no message, event, CLI name or export names it."""
    def register(cls: type) -> type:
        # The class is read, not made into a dataclass: nothing instantiates it, and the
        # methods a dataclass generates cost every process (`xe` too) ~25 ms at import.
        names = list(cls.__dict__.get("__annotations__", {}))
        declared = {k for k, v in vars(cls).items() if isinstance(v, _Declared)}
        if declared != set(names):
            raise TypeError(f"{cls.__name__}: every field is `name: Any = f(...)`: "
                            f"{sorted(declared.symmetric_difference(names))}")
        specs = [FieldSpec(name="uuid", xtype=STRING, qualifier=RO, doc="unique identifier")]
        for name in names:
            d = vars(cls)[name]
            specs.append(FieldSpec(name, d.xtype, d.qualifier, d.doc, d.default, d.reverse))
        spec = ClassSpec(cls.__name__, tuple(specs), (cls.__doc__ or "").strip(),
                         creatable, destroyable, next_events)
        (INTERNAL if internal else CLASSES)[spec.name] = spec
        STORED[spec.name] = spec
        _BY_NAME[spec.name] = {s.name: s for s in specs}
        if not internal:
            _BY_LOWER[spec.name.lower()] = spec
        return cls
    return register


def class_spec(name: str) -> ClassSpec | None:
    """Look a class up the way event subscriptions and the CLI spell it (any case)."""
    return _BY_LOWER.get(name.lower())


def str_map(qualifier: str = RW, doc: str = "") -> Any:
    return f(MapOf(STRING, STRING), qualifier, doc)


def refs(cls: str, reverse: str | None = None, qualifier: str = RO, doc: str = "") -> Any:
    return f(SetOf(Ref(cls)), qualifier, doc, reverse=reverse)
