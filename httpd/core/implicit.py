"""The implicit messages every class has, derived from its datamodel declaration.

get_all, get_all_records, get_all_records_where, get_record, get_by_uuid, get_by_name_label,
get_<field>, set_<field> (RW), add_to_/remove_from_<map> (RW maps), add_/remove_<set> (RW sets),
and create/destroy for classes that have them. Explicit messages in `httpd/api/` replace any of
these by name.
"""

from __future__ import annotations

import re
from typing import Any

from ..model.datamodel import CLASSES, RO, RW, ClassSpec, FieldSpec
from .context import Ctx
from .dispatch import Message, MessageTable
from ..model.errors import XenAPIError
from ..model.xtypes import NULL_REF, STRING, MapOf, Ref, SetOf

__all__ = ["implicit_table", "check_record", "parse_where", "ANY_RECORD"]


def check_record(ctx: Ctx, spec: ClassSpec, record: dict) -> dict:
    """Type-check a create() record: only RW/SRO fields, refs must exist (or be NULL)."""
    if not isinstance(record, dict):
        raise XenAPIError("FIELD_TYPE_ERROR", "record")
    out = {}
    for name, value in record.items():
        fs = spec.by_name.get(name)
        if fs is None or fs.qualifier == RO or fs.reverse:
            continue   # like xapi: fields a create cannot set are ignored, not fatal
        value = fs.xtype.check(value, name)
        if isinstance(fs.xtype, Ref) and value != NULL_REF:
            ctx.store.get(fs.xtype.cls, value)
        out[name] = value
    return out


def _getter(spec: ClassSpec, fs: FieldSpec) -> Message:
    cls, name = spec.name, fs.name

    def get(ctx: Ctx, ref: str) -> Any:
        return ctx.store.get(cls, ref)[name]
    return Message(f"{cls}.get_{name}", (("self", Ref(cls)),), get, async_ok=False)


def _setter(spec: ClassSpec, fs: FieldSpec) -> Message:
    cls, name = spec.name, fs.name

    def set_(ctx: Ctx, ref: str, value: Any) -> str:
        ctx.store.get(cls, ref)
        if isinstance(fs.xtype, Ref) and value != NULL_REF:
            ctx.store.get(fs.xtype.cls, value)
        ctx.store.update(cls, ref, {name: value})
        return ""
    return Message(f"{cls}.set_{name}", (("self", Ref(cls)), ("value", fs.xtype)), set_,
                   async_ok=False)


def _map_messages(spec: ClassSpec, fs: FieldSpec) -> list[Message]:
    cls, name = spec.name, fs.name
    assert isinstance(fs.xtype, MapOf)

    def add_to(ctx: Ctx, ref: str, key: str, value: Any) -> str:
        rec = ctx.store.get(cls, ref)
        if key in rec[name]:
            raise XenAPIError("MAP_DUPLICATE_KEY", cls, name, rec["uuid"], key)
        ctx.store.update(cls, ref, {name: {**rec[name], key: value}})
        return ""

    def remove_from(ctx: Ctx, ref: str, key: str) -> str:
        rec = ctx.store.get(cls, ref)
        if key in rec[name]:
            ctx.store.update(cls, ref, {name: {k: v for k, v in rec[name].items() if k != key}})
        return ""
    this = ("self", Ref(cls))
    return [Message(f"{cls}.add_to_{name}", (this, ("key", fs.xtype.key), ("value", fs.xtype.val)),
                    add_to, async_ok=False),
            Message(f"{cls}.remove_from_{name}", (this, ("key", fs.xtype.key)), remove_from,
                    async_ok=False)]


def _set_messages(spec: ClassSpec, fs: FieldSpec) -> list[Message]:
    cls, name = spec.name, fs.name
    assert isinstance(fs.xtype, SetOf)

    def add(ctx: Ctx, ref: str, value: Any) -> str:
        rec = ctx.store.get(cls, ref)
        if value not in rec[name]:
            ctx.store.update(cls, ref, {name: rec[name] + [value]})
        return ""

    def remove(ctx: Ctx, ref: str, value: Any) -> str:
        rec = ctx.store.get(cls, ref)
        if value in rec[name]:
            ctx.store.update(cls, ref, {name: [v for v in rec[name] if v != value]})
        return ""
    this = ("self", Ref(cls))
    return [Message(f"{cls}.add_{name}", (this, ("value", fs.xtype.elem)), add, async_ok=False),
            Message(f"{cls}.remove_{name}", (this, ("value", fs.xtype.elem)), remove,
                    async_ok=False)]


def visible(ctx: Ctx, cls: str, ref: str) -> bool:
    """Whether listings and events show `ref` to this caller. A session's ref is its bearer
    token: a client sees its own session only (the one it already holds)."""
    return cls != "session" or ref == ctx.session or ctx.session is None


def _class_messages(spec: ClassSpec) -> list[Message]:
    cls = spec.name
    this = ("self", Ref(cls))
    msgs: list[Message] = []

    def listed(ctx: Ctx) -> dict:
        table = ctx.store.all(cls)
        if cls != "session":
            return table
        return {r: rec for r, rec in table.items() if visible(ctx, cls, r)}

    def get_all(ctx: Ctx) -> list[str]:
        return list(listed(ctx))

    def get_all_records(ctx: Ctx) -> dict:
        return dict(listed(ctx))

    def get_all_records_where(ctx: Ctx, expr: str) -> dict:
        pred = parse_where(expr)
        return {ref: rec for ref, rec in listed(ctx).items() if pred(rec)}

    def get_record(ctx: Ctx, ref: str) -> dict:
        return ctx.store.get(cls, ref)

    def get_by_uuid(ctx: Ctx, uuid: str) -> str:
        ref = ctx.store.ref_of_uuid(cls, uuid)
        if not visible(ctx, cls, ref):
            raise XenAPIError("UUID_INVALID", cls, uuid)
        return ref

    msgs += [Message(f"{cls}.get_all", (), get_all, async_ok=False),
             Message(f"{cls}.get_all_records", (), get_all_records, async_ok=False),
             Message(f"{cls}.get_all_records_where", (("expr", STRING),), get_all_records_where,
                     async_ok=False),
             Message(f"{cls}.get_record", (this,), get_record, async_ok=False),
             Message(f"{cls}.get_by_uuid", (("uuid", STRING),), get_by_uuid, async_ok=False)]
    if "name_label" in spec.by_name:
        def get_by_name_label(ctx: Ctx, label: str) -> list[str]:
            return [r for r, rec in ctx.store.all(cls).items() if rec["name_label"] == label]
        msgs.append(Message(f"{cls}.get_by_name_label", (("label", STRING),), get_by_name_label,
                            async_ok=False))
    for fs in spec.fields:
        msgs.append(_getter(spec, fs))
        if fs.qualifier == RW:
            msgs.append(_setter(spec, fs))
            if fs.is_map:
                msgs += _map_messages(spec, fs)
            elif fs.is_set:
                msgs += _set_messages(spec, fs)
    if spec.creatable:
        def create(ctx: Ctx, record: dict) -> str:
            return ctx.store.create(cls, check_record(ctx, spec, record))
        # The record is heterogeneous: type-checked field by field in check_record.
        msgs.append(Message(f"{cls}.create", (("args", ANY_RECORD),), create, async_ok=True))
    if spec.destroyable:
        def destroy(ctx: Ctx, ref: str) -> str:
            ctx.store.destroy(cls, ref)
            return ""
        msgs.append(Message(f"{cls}.destroy", (this,), destroy, async_ok=True))
    return msgs


class _AnyRecord(MapOf):
    """A struct whose values are checked per field later (create's record)."""

    def __init__(self) -> None:
        super().__init__(STRING, STRING)
        self.name = "record"

    def check(self, value, field):
        if not isinstance(value, dict):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        return value


ANY_RECORD = _AnyRecord()


def implicit_table() -> MessageTable:
    table = MessageTable()
    for spec in CLASSES.values():
        for msg in _class_messages(spec):
            table.add(msg)
    return table


# --- get_all_records_where: xapi's small expression language --------------------------------
#   expr := term ("or" term)* ; term := factor ("and" factor)* ;
#   factor := "not" factor | "(" expr ")" | "true" | "false" | value ("=" | "<>") value
#   value := 'field "name"' | "literal"
_TOKEN = re.compile(r'\s*(?:(\()|(\))|(<>|=)|"((?:[^"\\]|\\.)*)"|([A-Za-z_]+))')


def _render(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_MAX_DEPTH = 64      # nested "not" and "(": deeper is refused, fast, before any evaluation


def parse_where(expr: str):
    shown = expr if len(expr) <= 200 else expr[:200] + "..."
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expr.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise XenAPIError("INVALID_VALUE", "expr", shown)
        pos = m.end()
        lp, rp, op, lit, word = m.groups()
        if lp:
            tokens.append(("(", lp))
        elif rp:
            tokens.append((")", rp))
        elif op:
            tokens.append(("op", op))
        elif lit is not None:
            tokens.append(("lit", lit.replace('\\"', '"')))
        else:
            tokens.append(("word", word.lower()))
    i = 0
    depth = 0

    def peek() -> tuple[str, str] | None:
        return tokens[i] if i < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise XenAPIError("INVALID_VALUE", "expr", shown)
        i += 1
        return tokens[i - 1]

    def value():
        kind, v = take()
        if kind == "word" and v == "field":
            kind2, name = take()
            if kind2 != "lit":
                raise XenAPIError("INVALID_VALUE", "expr", shown)
            # xapi's database names a namespaced field with "__" (`name__label` is name_label)
            key = name.replace("__", "_") if "__" in name else name
            return lambda rec: _render(rec.get(name, rec.get(key, "")))
        if kind == "lit":
            return lambda rec: v
        raise XenAPIError("INVALID_VALUE", "expr", shown)

    def nested(parse):
        nonlocal depth
        depth += 1
        if depth > _MAX_DEPTH:
            raise XenAPIError("INVALID_VALUE", "expr", f"nested deeper than {_MAX_DEPTH}")
        try:
            return parse()
        finally:
            depth -= 1

    def factor():
        t = peek()
        if t == ("word", "not"):
            take()
            inner = nested(factor)
            return lambda rec: not inner(rec)
        if t == ("(", "("):
            take()
            inner = nested(parse_or)
            if take() != (")", ")"):
                raise XenAPIError("INVALID_VALUE", "expr", shown)
            return inner
        if t in (("word", "true"), ("word", "false")):
            take()
            const = t[1] == "true"
            return lambda rec: const
        left = value()
        kind, op = take()
        if kind != "op":
            raise XenAPIError("INVALID_VALUE", "expr", shown)
        right = value()
        if op == "=":
            return lambda rec: left(rec) == right(rec)
        return lambda rec: left(rec) != right(rec)

    def chain(operand, word: str, combine):
        """`operand (word operand)*` as one flat `combine` (all/any): a long chain costs no
        recursion when evaluated."""
        def parse():
            fs = [operand()]
            while peek() == ("word", word):
                take()
                fs.append(operand())
            if len(fs) == 1:
                return fs[0]
            return lambda rec: combine(f(rec) for f in fs)
        return parse

    parse_and = chain(factor, "and", all)
    parse_or = chain(parse_and, "or", any)

    pred = parse_or()
    if i != len(tokens):
        raise XenAPIError("INVALID_VALUE", "expr", shown)
    return pred
