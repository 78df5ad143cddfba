"""JSON-RPC 1.0/2.0, the Unix socket, CORS, and bad request bodies over plain HTTP."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request

import pytest
import XenAPI

from tests.server import Server


def _post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _json(url, method, params, version=None, id_=1):
    call = {"method": method, "params": params, "id": id_}
    if version:
        call["jsonrpc"] = version
    status, body, headers = _post(url + "/jsonrpc", json.dumps(call).encode())
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    return json.loads(body)


def test_jsonrpc_1_0(server):
    r = _json(server.url, "session.login_with_password", ["root", server.password])
    assert r["error"] is None and r["id"] == 1
    sid = r["result"]
    r = _json(server.url, "VM.get_all_records", [sid], id_="abc")
    assert r["id"] == "abc" and r["error"] is None
    rec = next(iter(r["result"].values()))
    assert isinstance(rec["memory_static_max"], int)      # numbers in JSON, not strings
    assert rec["snapshot_time"].endswith("Z")
    r = _json(server.url, "VM.get_record", [sid, "OpaqueRef:x"])
    assert r["result"] is None and r["error"] == ["HANDLE_INVALID", "VM", "OpaqueRef:x"]
    _json(server.url, "session.logout", [sid])


def test_jsonrpc_2_0(server):
    r = _json(server.url, "session.login_with_password", ["root", server.password], "2.0")
    assert r["jsonrpc"] == "2.0" and "error" not in r
    sid = r["result"]
    r = _json(server.url, "host.get_all", [sid], "2.0", 7)
    assert r == {"jsonrpc": "2.0", "result": r["result"], "id": 7} and len(r["result"]) == 1
    r = _json(server.url, "VM.no_such_call", [sid], "2.0")
    assert r["error"] == {"code": 1, "message": "MESSAGE_METHOD_UNKNOWN",
                          "data": ["VM.no_such_call"]}
    r = _json(server.url, "session.login_with_password", ["root", "bad"], "2.0")
    assert r["error"]["message"] == "SESSION_AUTHENTICATION_FAILED"


def test_jsonrpc_bad_bodies(server):
    status, body, _ = _post(server.url + "/jsonrpc", b"{not json")
    assert status == 400 and b"Parse error" in body
    status, body, _ = _post(server.url + "/jsonrpc", b"[]")
    assert status == 400
    status, body, _ = _post(server.url + "/jsonrpc", b'{"params": []}')
    assert status == 200 and json.loads(body)["error"]["code"] == -32600


def test_xmlrpc_bad_bodies(server):
    for path in ("/", "/RPC2"):
        status, body, _ = _post(server.url + path, b"<methodCall><methodName>x", "text/xml")
        assert status == 400 and b"malformed XML" in body
    status, body, _ = _post(server.url, b"<foo/>", "text/xml")
    assert status == 400
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>'
            b'<methodCall><methodName>&c;</methodName></methodCall>')
    status, body, _ = _post(server.url, bomb, "text/xml")
    assert status == 400
    status, body, _ = _post(server.url, b"<methodCall><methodName>x</methodName><params>"
                            b"<param><value><base64>AA==</base64></value></param></params>"
                            b"</methodCall>", "text/xml")
    assert status == 400 and b"unsupported" in body


def test_oversized_body_refused(server):
    status, _, _ = _post(server.url, b"<methodCall>" + b" " * (17 * 2**20), "text/xml")
    assert status == 413
    # and the server is still fine
    assert server.session().xenapi.host.get_all()


def test_cors_preflight(server):
    req = urllib.request.Request(server.url + "/jsonrpc", method="OPTIONS")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]


def test_system_list_methods(server):
    import xmlrpc.client
    methods = xmlrpc.client.ServerProxy(server.url).system.listMethods()["Value"]
    assert "VM.get_record" in methods and "event.from" in methods and "task.cancel" in methods


def test_unix_socket_login_is_root():
    # The SDK maps "_" to "/" in the host name: the path must not contain "_".
    base = tempfile.mkdtemp(prefix="xcpsock")
    if "_" in base:
        shutil.rmtree(base)
        base = f"/tmp/xcpsock{os.getpid()}"
        os.makedirs(base, exist_ok=True)
    srv = Server(base).start()
    try:
        host = srv.socket_path.replace("/", "_")
        s = XenAPI.Session(f"http://{host}/", transport=XenAPI.UDSTransport())
        s.xenapi.login_with_password("root", "ignored-over-the-local-socket")
        assert len(s.xenapi.host.get_all()) == 1
        s.xenapi.session.logout()
        assert oct(os.stat(srv.socket_path).st_mode & 0o777) == "0o600"
    finally:
        srv.stop()
        shutil.rmtree(base, ignore_errors=True)
