"""The XML-RPC codec: xapi's encodings, and hostile bodies refused."""

from __future__ import annotations

import datetime as dt
import xmlrpc.client

import pytest

from httpd.wire.xmlrpc import (
    XMLRPCParseError, dumps_call, dumps_response, dumps_value, parse_call, parse_value_text,
)


def test_ints_travel_as_strings_and_dates_with_z():
    when = dt.datetime(2009, 10, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    text = dumps_value({"big": 2**40, "flag": True, "f": 0.5, "when": when, "s": "a<b&c",
                        "l": [1, "x"]})
    assert "<value>1099511627776</value>" in text
    assert "<boolean>1</boolean>" in text and "<double>0.5</double>" in text
    assert "<dateTime.iso8601>20091001T12:00:00Z</dateTime.iso8601>" in text
    assert "a&lt;b&amp;c" in text
    assert parse_value_text(text) == {"big": "1099511627776", "flag": True, "f": 0.5,
                                      "when": when, "s": "a<b&c", "l": ["1", "x"]}


def test_stdlib_client_reads_our_responses():
    body = dumps_response({"Status": "Success", "Value": ["x", {"k": False}]})
    (value,), _ = xmlrpc.client.loads(body)
    assert value == {"Status": "Success", "Value": ["x", {"k": False}]}


def test_accepts_every_int_spelling():
    call = dumps_call("m", [])
    assert parse_call(call) == ("m", [])
    body = (b"<methodCall><methodName>m</methodName><params>"
            b"<param><value><int>1</int></value></param><param><value><i4>2</i4></value></param>"
            b"<param><value><i8>8589934592</i8></value></param>"
            b"<param><value><string>s</string></value></param>"
            b"<param><value>bare</value></param>"
            b"<param><value><dateTime.iso8601>2009-10-01T12:00:00Z</dateTime.iso8601></value></param>"
            b"</params></methodCall>")
    name, params = parse_call(body)
    assert params[:5] == [1, 2, 8589934592, "s", "bare"] and params[5].year == 2009


@pytest.mark.parametrize("body", [
    b"", b"not xml", b"<methodCall/>", b"<methodResponse/>",
    b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><methodCall><methodName>&e;'
    b"</methodName></methodCall>",
    b"<methodCall><methodName>m</methodName><params><param><value><int>x</int></value>"
    b"</param></params></methodCall>",
    b"<methodCall><methodName>m</methodName><params><param><value><boolean>2</boolean>"
    b"</value></param></params></methodCall>",
    b"<methodCall><methodName>m</methodName><params><param/></params></methodCall>",
    # nesting deeper than lxml's safe limit: refused by the parser, never a RecursionError
    b"<methodCall><methodName>m</methodName><params><param>" + b"<value><array><data>" * 3000
    + b"</data></array></value>" * 3000 + b"</param></params></methodCall>",
])
def test_hostile_or_broken_bodies(body):
    with pytest.raises(XMLRPCParseError):
        parse_call(body)
