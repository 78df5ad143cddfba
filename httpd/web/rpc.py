"""The RPC endpoints: XML-RPC on `/`, `/RPC2` and `/xmlrpc`, JSON-RPC 1.0/2.0 on `/jsonrpc`.

Transport only: decode, hand to `core.calls.call`, encode the envelope. XenAPI failures are ordinary
results on the wire (HTTP 200); only a body that is not a request at all gets an HTTP error.
"""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from aiohttp import web

from ..core import calls
from ..model.errors import XenAPIError
from .auth import is_local
from .appkeys import SERVICES
from ..wire.xmlrpc import XMLRPCParseError, dumps_response, failure, parse_call, success
from ..model.xtypes import format_datetime

__all__ = ["routes"]

CORS = {"Access-Control-Allow-Origin": "*"}


async def xmlrpc(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await request.read()
    try:
        method, params = parse_call(body)
    except XMLRPCParseError as e:
        return web.Response(status=400, text=f"Bad XML-RPC request: {e}\n", headers=CORS)
    try:
        envelope = success(await calls.call(services, method, params, local=is_local(request)))
    except XenAPIError as e:
        envelope = failure(e.description)
    return web.Response(body=dumps_response(envelope), content_type="text/xml", headers=CORS)


def _json_default(v: Any) -> Any:
    if isinstance(v, _dt.datetime):
        return format_datetime(v)
    raise TypeError(f"cannot encode {type(v).__name__}")


def _json_error(status: int, code: int, message: str) -> web.Response:
    body = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", headers=CORS)


async def _json_call(request: web.Request, call: Any) -> dict | None:
    services = request.app[SERVICES]
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        return {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"},
                "id": call.get("id") if isinstance(call, dict) else None}
    v2 = call.get("jsonrpc") == "2.0"
    params = call.get("params", [])
    if isinstance(params, dict):   # by-name params: keep the order the client wrote them in
        params = list(params.values())
    if not isinstance(params, list):
        params = [params]
    try:
        value = await calls.call(services, call["method"], params, local=is_local(request))
    except XenAPIError as e:
        if v2:
            return {"jsonrpc": "2.0", "error": {"code": 1, "message": e.code, "data": e.params},
                    "id": call.get("id")}
        return {"result": None, "error": e.description, "id": call.get("id")}
    if v2:
        return {"jsonrpc": "2.0", "result": value, "id": call.get("id")}
    return {"result": value, "error": None, "id": call.get("id")}


async def jsonrpc(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return _json_error(400, -32700, f"Parse error: {e}")
    if isinstance(payload, list):
        if not payload:
            return _json_error(400, -32600, "Invalid Request: empty batch")
        out: Any = [await _json_call(request, c) for c in payload]
    else:
        out = await _json_call(request, payload)
    # exactly `application/json`: Xen Orchestra takes anything else (even `; charset=utf-8`,
    # which JSON does not need) for a host without JSON-RPC and falls back to XML-RPC
    return web.Response(body=json.dumps(out, default=_json_default).encode(),
                        content_type="application/json", headers=CORS)


async def preflight(request: web.Request) -> web.Response:
    return web.Response(headers={
        **CORS, "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Max-Age": "86400"})


def routes() -> list[web.RouteDef]:
    out = [web.post("/jsonrpc", jsonrpc), web.options("/jsonrpc", preflight)]
    for path in ("/", "/RPC2", "/xmlrpc"):     # /xmlrpc: where Xen Orchestra's client posts
        out += [web.post(path, xmlrpc), web.options(path, preflight)]
    return out
