"""XML-RPC as xapi speaks it: pure encode/decode, no I/O.

Differences from the XML-RPC spec that clients rely on: 64-bit ints travel as bare strings
(`<value>4294967296</value>`), datetimes carry a trailing `Z`. Requests are parsed with lxml
under a parser that refuses DTDs and entities, so a billion-laughs body costs nothing.
"""

from __future__ import annotations

import datetime as _dt
from lxml import etree

from ..model.xtypes import CachedStruct, format_datetime, parse_datetime

__all__ = [
    "CachedStruct", "XMLRPCParseError", "parse_call", "parse_value_text", "dumps_value", "dumps_response",
    "dumps_call", "success", "failure",
]


class XMLRPCParseError(ValueError):
    """The peer sent something that is not a well-formed XML-RPC call (HTTP 400)."""


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          huge_tree=False, remove_comments=True, remove_pis=True)


def _parse_xml(body: bytes) -> etree._Element:
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as e:
        raise XMLRPCParseError(f"malformed XML: {e}") from None
    if root.getroottree().docinfo.internalDTD is not None or root.getroottree().docinfo.doctype:
        raise XMLRPCParseError("DTDs are not allowed")
    return root


def _decode(value_el: etree._Element) -> object:
    children = [c for c in value_el if isinstance(c.tag, str)]
    if not children:
        return value_el.text or ""
    if len(children) != 1:
        raise XMLRPCParseError("a <value> holds one typed element")
    el = children[0]
    tag = el.tag
    text = el.text or ""
    if tag == "string":
        return text
    if tag in ("int", "i4", "i8"):
        try:
            return int(text.strip())
        except ValueError:
            raise XMLRPCParseError(f"bad <{tag}>: {text!r}") from None
    if tag == "boolean":
        t = text.strip()
        if t not in ("0", "1"):
            raise XMLRPCParseError(f"bad <boolean>: {t!r}")
        return t == "1"
    if tag == "double":
        try:
            return float(text.strip())
        except ValueError:
            raise XMLRPCParseError(f"bad <double>: {text!r}") from None
    if tag == "dateTime.iso8601":
        try:
            return parse_datetime(text)
        except ValueError as e:
            raise XMLRPCParseError(str(e)) from None
    if tag == "struct":
        out: dict[str, object] = {}
        for member in el:
            if member.tag != "member":
                continue
            name_el = member.find("name")
            val_el = member.find("value")
            if name_el is None or val_el is None:
                raise XMLRPCParseError("a <member> needs <name> and <value>")
            out[name_el.text or ""] = _decode(val_el)
        return out
    if tag == "array":
        data = el.find("data")
        if data is None:
            raise XMLRPCParseError("an <array> needs <data>")
        return [_decode(v) for v in data if v.tag == "value"]
    if tag == "nil":
        return None
    raise XMLRPCParseError(f"unsupported value type <{tag}>")


def parse_call(body: bytes) -> tuple[str, list[object]]:
    """A methodCall body -> (method name, params)."""
    root = _parse_xml(body)
    if root.tag != "methodCall":
        raise XMLRPCParseError("expected <methodCall>")
    name_el = root.find("methodName")
    if name_el is None or not (name_el.text or "").strip():
        raise XMLRPCParseError("missing <methodName>")
    params: list[object] = []
    params_el = root.find("params")
    if params_el is not None:
        for p in params_el:
            if p.tag != "param":
                continue
            v = p.find("value")
            if v is None:
                raise XMLRPCParseError("a <param> needs a <value>")
            params.append(_decode(v))
    return name_el.text.strip(), params


def parse_value_text(text: str | bytes) -> object:
    """Decode a lone `<value>...</value>` (a task's `result`, an ova.xml)."""
    root = _parse_xml(text.encode() if isinstance(text, str) else text)
    if root.tag != "value":
        raise XMLRPCParseError("expected <value>")
    return _decode(root)


def parse_response(body: bytes) -> object:
    """A methodResponse body -> its single value (for our own clients and tests)."""
    root = _parse_xml(body)
    v = root.find("params/param/value")
    if v is None:
        raise XMLRPCParseError("expected params/param/value")
    return _decode(v)


_ESC = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _escape(s: str) -> str:
    return s.translate(_ESC) if ("&" in s or "<" in s or ">" in s) else s


def _encode(v: object, out: list[str]) -> None:
    # Order matters: bool before int (bool is an int), str first as the commonest.
    if isinstance(v, str):
        out.append("<value>")
        out.append(_escape(v))
        out.append("</value>")
    elif isinstance(v, bool):
        out.append("<value><boolean>1</boolean></value>" if v else
                   "<value><boolean>0</boolean></value>")
    elif isinstance(v, int):
        out.append(f"<value>{v}</value>")
    elif type(v) is CachedStruct:
        if v.xml is None:
            inner: list[str] = []
            _encode(dict(v), inner)
            v.xml = "".join(inner)
        out.append(v.xml)
    elif isinstance(v, dict):
        out.append("<value><struct>")
        for k, item in v.items():
            out.append("<member><name>")
            out.append(_escape(str(k)))
            out.append("</name>")
            _encode(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif isinstance(v, (list, tuple)):
        out.append("<value><array><data>")
        if len(v) > 8 and all(type(item) is str for item in v):   # tags, refs: joined in C
            blob = "\0".join(v)
            items = v if not ("&" in blob or "<" in blob or ">" in blob) else \
                [_escape(item) for item in v]
            out.append("<value>")
            out.append("</value><value>".join(items))
            out.append("</value>")
        else:
            for item in v:
                _encode(item, out)
        out.append("</data></array></value>")
    elif isinstance(v, float):
        out.append(f"<value><double>{v!r}</double></value>")
    elif isinstance(v, _dt.datetime):
        out.append(f"<value><dateTime.iso8601>{format_datetime(v)}</dateTime.iso8601></value>")
    elif v is None:
        out.append("<value></value>")
    else:
        raise TypeError(f"cannot encode {type(v).__name__} in XML-RPC")


def dumps_value(v: object) -> str:
    """A lone `<value>` (what xapi stores in task.result)."""
    out: list[str] = []
    _encode(v, out)
    return "".join(out)


def dumps_response(v: object) -> bytes:
    out = ["<?xml version='1.0'?>\n<methodResponse><params><param>"]
    _encode(v, out)
    out.append("</param></params></methodResponse>\n")
    return "".join(out).encode("utf-8")


def dumps_call(method: str, params: list[object]) -> bytes:
    out = [f"<?xml version='1.0'?>\n<methodCall><methodName>{_escape(method)}</methodName><params>"]
    for p in params:
        out.append("<param>")
        _encode(p, out)
        out.append("</param>")
    out.append("</params></methodCall>\n")
    return "".join(out).encode("utf-8")


def success(value: object) -> dict[str, object]:
    return {"Status": "Success", "Value": value}


def failure(description: list[str]) -> dict[str, object]:
    return {"Status": "Failure", "ErrorDescription": description}
