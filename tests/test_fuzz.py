"""Fuzzing the parsers an anonymous client reaches (issue 14): only each module's documented
error types may escape, whatever the bytes. Hypothesis, derandomized (tests/conftest.py's
profile): the same examples every run, so a failure reproduces.

- xva (tar and XVA reader): XVAError and its subclasses;
- XML-RPC decoding: XMLRPCParseError; JSON-RPC decoding: ValueError;
- get_all_records_where expressions: XenAPIError;
- the RFB server core: RemoteProtocolError (then LocalProtocolError once in the error state);
- the CONNECT head parser: ValueError; the QMP connection: its protocol errors.
"""

from __future__ import annotations

import io
import json
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console_proxy.errors import LocalProtocolError, RemoteProtocolError
from console_proxy.frontend import parse_connect_head
from console_proxy.rfb import NEED_DATA, RfbServerConnection
from httpd.core.implicit import parse_where
from httpd.model.errors import XenAPIError
from httpd.web.rpc import parse_json
from httpd.wire.xmlrpc import XMLRPCParseError, parse_call
from xva.errors import XVAError
from xva.reader import XVAReader
from xva.tar import TarReader

_QUICK = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


def _feed_all(reader, data: bytes, cut: int) -> None:
    for i in range(0, len(data), cut):
        for _ in reader.feed(data[i:i + cut]):
            pass
    for _ in reader.close() or ():
        pass


# --- tar and XVA ----------------------------------------------------------------------------
_pax_value = st.one_of(st.text(max_size=30), st.integers(-10, 10**30).map(str),
                       st.sampled_from(["\u00b2", "\u0663", "9" * 5000, "", " 1", "1e3"]))
_member = st.fixed_dictionaries({
    "name": st.one_of(st.just("ova.xml"), st.text(min_size=1, max_size=40),
                      st.sampled_from(["Ref:1/00000000", "../x", "/etc/passwd", "a/./b"])),
    "type": st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                             tarfile.CHRTYPE, tarfile.FIFOTYPE, b"7", b"x"]),
    "data": st.binary(max_size=600),
    "pax": st.dictionaries(st.sampled_from(["size", "path", "mtime", "comment"]), _pax_value,
                           max_size=3),
})


def _tar(members, fmt) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.type = m["type"]
            info.size = len(m["data"]) if m["type"] == tarfile.REGTYPE else 0
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = m["pax"]
            try:
                tar.addfile(info, io.BytesIO(m["data"]) if info.size else None)
            except (ValueError, UnicodeError, tarfile.TarError):
                continue            # the standard library would not write this header
    return buf.getvalue()


@_QUICK
@given(st.lists(_member, max_size=4), st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
       st.integers(1, 700), st.data())
def test_tar_and_xva_readers_raise_only_xva_errors(members, fmt, cut, data):
    raw = bytearray(_tar(members, fmt))
    if raw and data.draw(st.booleans()):          # and a damaged header: base-256 sizes, junk
        at = data.draw(st.integers(0, max(0, len(raw) - 12)))
        raw[at:at + 12] = data.draw(st.binary(min_size=12, max_size=12))
    for reader in (TarReader(), XVAReader()):
        try:
            _feed_all(reader, bytes(raw), cut)
        except XVAError:
            pass


@_QUICK
@given(st.binary(max_size=2000), st.integers(1, 500))
def test_xva_reader_takes_any_bytes(data, cut):
    try:
        _feed_all(XVAReader(), data, cut)
    except XVAError:
        pass


# --- RPC decoders -----------------------------------------------------------------------------
_xml_value = st.recursive(
    st.one_of(st.text(max_size=20).map(lambda t: f"<string>{t}</string>"),
              st.integers(-2**70, 2**70).map(lambda i: f"<int>{i}</int>"),
              st.sampled_from(["<boolean>2</boolean>", "<double>nan</double>", "<nil/>",
                               "<dateTime.iso8601>2020</dateTime.iso8601>", "<base64>x</base64>",
                               "<i8>x</i8>", "plain", "&#xD800;", "&amp;", "<![CDATA[x]]>"])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(
            lambda vs: "<array><data>" + "".join(f"<value>{v}</value>" for v in vs) +
            "</data></array>"),
        st.lists(st.tuples(st.text(max_size=8), inner), max_size=3).map(
            lambda ms: "<struct>" + "".join(f"<member><name>{n}</name><value>{v}</value>"
                                            "</member>" for n, v in ms) + "</struct>")),
    max_leaves=8)


@_QUICK
@given(st.text(max_size=30), st.lists(_xml_value, max_size=3), st.binary(max_size=40))
def test_xmlrpc_decoder_raises_only_its_parse_error(method, params, junk):
    body = ("<?xml version='1.0'?><methodCall><methodName>" + method + "</methodName><params>" +
            "".join(f"<param><value>{p}</value></param>" for p in params) +
            "</params></methodCall>").encode("utf-8", "surrogatepass")
    for candidate in (body, junk + body, body[:len(body) // 2], junk):
        try:
            parse_call(candidate)
        except XMLRPCParseError:
            pass


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                               st.text(max_size=10)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=5), inner,
                                                             max_size=3)), max_leaves=10)


@_QUICK
@given(_json, st.binary(max_size=60), st.integers(0, 3000))
def test_json_decoder_raises_only_value_error(value, junk, depth):
    text = json.dumps(value)
    for candidate in (text.encode(), junk, text.encode()[:-1], b"[" * depth + b"]" * depth,
                      text.replace("a", "\\udc80").encode(), b'"\\ud800"', junk + text.encode()):
        try:
            parse_json(candidate)
        except ValueError:
            pass


# --- where-expressions ------------------------------------------------------------------------
_word = st.sampled_from(['field "name__label"', '"x"', "=", "<>", "and", "or", "not", "(", ")",
                         "true", "false", "field", '"', "\\", 'field "power_state"', "\x00"])


@_QUICK
@given(st.lists(_word, max_size=40), st.text(max_size=20), st.integers(0, 5000))
def test_where_parser_raises_only_xenapi_errors(words, noise, nots):
    for expr in (" ".join(words), noise, "not " * nots + "true", "(" * nots + "true"):
        try:
            pred = parse_where(expr)
        except XenAPIError:
            continue
        pred({"name_label": "x", "power_state": "Halted"})


# --- the RFB server core ----------------------------------------------------------------------
@_QUICK
@given(st.sampled_from([b"", b"RFB 003.008\n", b"RFB 003.003\n", b"RFB 003.008\n\x01\x01"]),
       st.lists(st.binary(max_size=50), max_size=8))
def test_rfb_server_raises_only_protocol_errors(prefix, pieces):
    conn = RfbServerConnection(64, 32, version=(3, 8))
    conn.data_to_send()
    try:
        for piece in [prefix, *pieces]:
            conn.receive_data(piece)
            while conn.next_event() is not NEED_DATA:
                pass
            conn.data_to_send()
    except RemoteProtocolError:
        try:
            conn.receive_data(b"x")
        except LocalProtocolError:
            pass                              # the error state refuses further use


# --- the CONNECT head parser ------------------------------------------------------------------
@_QUICK
@given(st.binary(max_size=300), st.text(max_size=60),
       st.lists(st.tuples(st.text(max_size=10), st.text(max_size=20)), max_size=4))
def test_connect_head_parser_raises_only_value_error(junk, target, headers):
    heads = [junk + b"\r\n\r\n",
             ("CONNECT " + target + " HTTP/1.1\r\n" +
              "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8",
                                                                             "surrogatepass")]
    for head in heads:
        try:
            parse_connect_head(head)
        except ValueError:
            pass


# --- QMP (what a QEMU process says) ----------------------------------------------------------
@_QUICK
@given(st.lists(st.one_of(_json.map(lambda v: json.dumps(v).encode()), st.binary(max_size=40),
                          st.sampled_from([b'{"QMP": {}}', b'{"return": {}, "id": 1}',
                                           b'{"event": "STOP"}', b'{"id": 7}'])),
                max_size=6))
def test_qmp_connection_raises_only_protocol_errors(lines):
    from httpd.backends.qemu.qmp import LocalProtocolError as QmpLocal
    from httpd.backends.qemu.qmp import QmpConnection
    from httpd.backends.qemu.qmp import RemoteProtocolError as QmpRemote
    conn = QmpConnection()
    try:
        for line in lines:
            conn.receive(line + b"\n")
            if conn.state == "ready":
                conn.command("query-status")
    except (QmpRemote, QmpLocal):
        pass
