"""The XenAPI type system: how each field's values are checked, defaulted and stored.

Records hold plain Python values (str, int, float, bool, datetime, list, dict) so the RPC
encoders can walk them without a schema; the types here are what make those values trustworthy:
`check` turns a value off the wire into the canonical form or raises FIELD_TYPE_ERROR, and
`to_db`/`from_db` map it onto an SQLite column.
"""

from __future__ import annotations

import datetime as _dt
import json
import re

from .errors import XenAPIError

__all__ = [
    "XType", "STRING", "INT", "FLOAT", "BOOL", "DATETIME", "Enum", "Ref", "SetOf", "MapOf",
    "NULL_REF", "EPOCH", "parse_datetime", "format_datetime", "CachedStruct",
]

NULL_REF = "OpaqueRef:NULL"
EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_INT64 = (-(2**63), 2**63 - 1)
_DT_RE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]00:?00)?$")


def parse_datetime(text: str) -> _dt.datetime:
    """Accept xapi's `20091001T12:00:00Z` and the ISO form; naive times are UTC (the guide)."""
    m = _DT_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a datetime: {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    return _dt.datetime(y, mo, d, h, mi, s, tzinfo=_dt.timezone.utc)


def format_datetime(value: _dt.datetime) -> str:
    """xapi's wire form: basic date, extended time, a literal Z for UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(_dt.timezone.utc)
    return value.strftime("%Y%m%dT%H:%M:%SZ")


class CachedStruct(dict):
    """A dict that is never changed after it is made (the store's records): the wire codec
    keeps its XML-RPC encoding in `xml`, computed once and reused by every get_record,
    get_all_records and event."""

    __slots__ = ("xml",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.xml: str | None = None


class XType:
    """One XenAPI type. Subclasses say how to check, default and store a value."""

    name = "?"
    sql = "TEXT"

    def check(self, value: object, field: str) -> object:
        raise NotImplementedError

    def default(self) -> object:
        raise NotImplementedError

    def to_db(self, value: object) -> object:
        return value

    def from_db(self, value: object) -> object:
        return value

    def __repr__(self) -> str:
        return self.name


def is_text(s: str) -> bool:
    """Only Unicode scalar values: no lone surrogate (JSON's `\\udc80`, a file name decoded
    with surrogateescape), which no XML-RPC reply or database row could carry."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def all_text(v: object) -> bool:
    """is_text for every string inside a value (maps, sets, lists)."""
    if isinstance(v, str):
        return is_text(v)
    if isinstance(v, dict):
        return all(all_text(k) and all_text(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        if all(type(x) is str for x in v):       # a set of strings: one check of them all
            return is_text("".join(v))
        return all(all_text(x) for x in v)
    return True


class _String(XType):
    name = "string"

    def check(self, value, field):
        if isinstance(value, str):
            if not is_text(value):
                raise XenAPIError("INVALID_VALUE", field, "not valid Unicode (a lone surrogate)")
            return value
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return ""


class _Int(XType):
    name = "int"
    sql = "INTEGER"

    def check(self, value, field):
        # XML-RPC carries 64-bit ints as decimal strings; bool is an int subclass but not an int here.
        if isinstance(value, bool):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise XenAPIError("FIELD_TYPE_ERROR", field) from None
        if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
            return value
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return 0


class _Float(XType):
    name = "float"
    sql = "REAL"

    def check(self, value, field):
        if isinstance(value, bool):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return 0.0


class _Bool(XType):
    name = "bool"
    sql = "INTEGER"

    def check(self, value, field):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return False

    def from_db(self, value):
        return bool(value)


class _DateTime(XType):
    name = "datetime"

    def check(self, value, field):
        if isinstance(value, _dt.datetime):
            return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
        if isinstance(value, str):
            try:
                return parse_datetime(value)
            except ValueError:
                pass
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return EPOCH

    def to_db(self, value):
        return format_datetime(value)

    def from_db(self, value):
        return parse_datetime(value)


class Enum(XType):
    """A closed set of strings; INVALID_VALUE (not a type error) for a string outside it."""

    def __init__(self, name: str, *values: str) -> None:
        self.name = name
        self.values = values
        self._lower = {v.lower(): v for v in values}

    def check(self, value, field):
        if not isinstance(value, str):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        try:
            return self._lower[value.lower()]
        except KeyError:
            raise XenAPIError("INVALID_VALUE", field, value) from None

    def default(self):
        return self.values[0]


class Ref(XType):
    """A reference to an object of class `cls`; existence is checked by the store, not here."""

    def __init__(self, cls: str) -> None:
        self.cls = cls
        self.name = f"{cls} ref"

    def check(self, value, field):
        if isinstance(value, str):
            return value
        raise XenAPIError("FIELD_TYPE_ERROR", field)

    def default(self):
        return NULL_REF


class SetOf(XType):
    def __init__(self, elem: XType) -> None:
        self.elem = elem
        self.name = f"{elem.name} set"

    def check(self, value, field):
        if not isinstance(value, (list, tuple)):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        if type(self.elem) is _String:   # the commonest (tags, classes): whole-list checks in C
            if not all(type(v) is str for v in value):
                raise XenAPIError("FIELD_TYPE_ERROR", field)
            if not is_text("".join(value)):
                raise XenAPIError("INVALID_VALUE", field, "not valid Unicode (a lone surrogate)")
            return list(dict.fromkeys(value))
        out: list = []
        seen: set = set()
        for v in value:    # duplicates dropped, first order kept, in linear time
            v = self.elem.check(v, field)
            try:
                if v in seen:
                    continue
                seen.add(v)
            except TypeError:          # unhashable members (a set of maps): compare
                if v in out:
                    continue
            out.append(v)
        return out

    def default(self):
        return []

    def to_db(self, value):
        return json.dumps([self.elem.to_db(v) for v in value])

    def from_db(self, value):
        return [self.elem.from_db(v) for v in json.loads(value)]


class MapOf(XType):
    def __init__(self, key: XType, val: XType) -> None:
        self.key = key
        self.val = val
        self.name = f"({key.name} -> {val.name}) map"

    def check(self, value, field):
        if not isinstance(value, dict):
            raise XenAPIError("FIELD_TYPE_ERROR", field)
        return {self.key.check(k, field): self.val.check(v, field) for k, v in value.items()}

    def default(self):
        return {}

    def to_db(self, value):
        return json.dumps({k: self.val.to_db(v) for k, v in value.items()})

    def from_db(self, value):
        return {k: self.val.from_db(v) for k, v in json.loads(value).items()}


STRING = _String()
INT = _Int()
FLOAT = _Float()
BOOL = _Bool()
DATETIME = _DateTime()
