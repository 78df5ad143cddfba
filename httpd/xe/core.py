"""The command framework of `xe`: the invocation context, the command table, record printing."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Callable, TextIO

from ..model.datamodel import CLASSES
from ..model.xtypes import NULL_REF, MapOf, SetOf
from .client import ApiFailure, Endpoint, Session, XeError
from .fields import Param, find_param, norm, params_of, render_param, xe_class_name

__all__ = ["Ctx", "Command", "COMMANDS", "command", "UsageError", "class_of", "print_records"]

UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}$")


class UsageError(XeError):
    """A command-line mistake: the message plus a pointer to `xe help <command>`."""

    def __init__(self, message: str, command: str | None = None) -> None:
        hint = f"\nFor usage run: 'xe help{' ' + command if command else ''}'"
        super().__init__(f"Error: {message}{hint}", status=1)


@dataclass
class Command:
    name: str
    run: Callable[["Ctx"], int | None]
    help: str
    reqd: tuple[str, ...] = ()
    optn: tuple[str, ...] = ()
    selector: str | None = None     # a class whose parameters select the objects (vm=, filters)
    free: bool = False              # any `name=value` accepted (list filters, param-set)
    flags: tuple[str, ...] = ()     # --force, --minimal ... (also accepted as force=true)
    session: bool = True
    hidden: bool = False
    cls: str | None = None          # the class a generic command works on

    def usage(self) -> str:
        optn = list(self.optn)
        if self.selector:
            optn.append(f"<{xe_class_name(self.selector)}-selectors>")
        if self.free and not self.selector:
            optn.append("<field>=<value>...")
        optn += [f"--{f}" for f in self.flags]
        return "\n".join([
            f"command name            : {self.name}",
            f"        reqd params     : {', '.join(self.reqd)}",
            f"        optional params : {', '.join(optn)}",
            f"        description     : {self.help}"])


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, *, reqd: tuple[str, ...] = (), optn: tuple[str, ...] = (),
            selector: str | None = None, free: bool = False, flags: tuple[str, ...] = (),
            session: bool = True, hidden: bool = False, cls: str | None = None
            ) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = Command(name, fn, help, reqd, optn, selector, free, flags, session,
                                 hidden, cls)
        return fn
    return register


def class_of(xe_name: str) -> str | None:
    """`vm` -> `VM`, `vm-guest-metrics` -> `VM_guest_metrics`."""
    n = norm(xe_name)
    for name in CLASSES:
        if norm(name) == n:
            return name
    return None


@dataclass
class Ctx:
    endpoint: Endpoint
    cmd: Command
    params: dict[str, str]
    flags: set[str]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _session: Session | None = None
    _records: dict[str, dict[str, dict]] = field(default_factory=dict)
    _one: dict[tuple[str, str], dict | None] = field(default_factory=dict)

    # --- session -----------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.endpoint).login()
        return self._session

    def call(self, method: str, *args: object) -> object:
        return self.session.call(method, *args)

    def close(self) -> None:
        if self._session is not None:
            self._session.logout()
            self._session = None

    # --- parameters --------------------------------------------------------------------------
    def flag(self, name: str) -> bool:
        if name in self.flags:
            return True
        v = self.params.get(name)
        return v is not None and v.strip().lower() in ("true", "yes", "on", "1")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.params.get(name, default)

    def need(self, name: str) -> str:
        v = self.params.get(name)
        if v is None or v == "":
            raise UsageError(f"this command needs the parameter {name}=", self.cmd.name)
        return v

    # --- records -----------------------------------------------------------------------------
    def all_records(self, cls: str) -> dict[str, dict]:
        if cls not in self._records:
            self._records[cls] = dict(self.call(f"{cls}.get_all_records"))  # type: ignore[arg-type]
        return self._records[cls]

    def lookup(self, cls: str, ref: str) -> dict | None:
        if not ref or ref == NULL_REF:
            return None
        if cls in self._records:
            return self._records[cls].get(ref)
        key = (cls, ref)
        if key not in self._one:
            try:
                self._one[key] = dict(self.call(f"{cls}.get_record", ref))  # type: ignore
            except ApiFailure:
                self._one[key] = None
        return self._one[key]

    def by_uuid(self, cls: str, uuid: str) -> str:
        return str(self.call(f"{cls}.get_by_uuid", uuid))

    def resolve(self, cls: str, text: str) -> str:
        """A uuid, a ref or a unique name-label -> a ref (for `vm=`, `sr-uuid=`...)."""
        if text.startswith("OpaqueRef:"):
            return text
        if UUID_RE.match(text):
            return self.by_uuid(cls, text)
        if "name_label" in CLASSES[cls].by_name:
            refs = list(self.call(f"{cls}.get_by_name_label", text))  # type: ignore[arg-type]
            if len(refs) == 1:
                return refs[0]
            if len(refs) > 1:
                raise XeError(f"Error: more than one {xe_class_name(cls)} is named {text!r}: "
                              f"give its uuid instead")
        raise XeError(f"Error: no {xe_class_name(cls)} matches {text!r}")

    def render(self, p: Param, rec: dict) -> str:
        return render_param(p, rec, self.lookup)


def print_records(ctx: Ctx, rows: list[dict], params: list[Param], minimal: bool) -> None:
    out = ctx.out
    if minimal:
        first = params[0] if params else None
        out.write(",".join(ctx.render(first, r) for r in rows) if first else "")
        out.write("\n")
        return
    for rec in rows:
        out.write(format_record([(p.label, ctx.render(p, rec)) for p in params]))
        out.write("\n\n\n")


def format_record(items: list[tuple[str, str]]) -> str:
    """xe's layout: the first label left-aligned, the others right-aligned, to a common width."""
    if not items:
        return ""
    width = max(len(label) for label, _ in items) + 4
    lines = []
    for i, (label, value) in enumerate(items):
        lines.append(f"{label.ljust(width) if i == 0 else label.rjust(width)}: {value}")
    return "\n".join(lines)


def is_container(p: Param) -> str | None:
    xt = p.spec.xtype
    return "map" if isinstance(xt, MapOf) else "set" if isinstance(xt, SetOf) else None


def list_params(cls: str, wanted: str | None, default: tuple[str, ...]) -> list[Param]:
    if wanted is None:
        names = ("uuid", *default)
    elif wanted.strip().lower() == "all":
        return list(params_of(cls))
    else:
        names = tuple(n.strip() for n in wanted.split(",") if n.strip())
    out = []
    for n in names:
        p = find_param(cls, n)
        if p is None:
            raise XeError(f"Error: unknown field {n!r} for {xe_class_name(cls)}")
        out.append(p)
    return out
