"""The RPC endpoints: XML-RPC on `/`, `/RPC2` and `/xmlrpc`, JSON-RPC 1.0/2.0 on `/jsonrpc`.

Transport only: read and decode, hand to `core.calls.call`, encode the envelope. XenAPI failures
are ordinary results on the wire (HTTP 200); only a body that is not a request at all gets an
HTTP error. What an anonymous client can make the server do is bounded by what it sends:
- a body over 64 KiB must name a live session in its first 4 KiB (every call with a big
  argument takes its session first), else 413 before the rest is read or parsed; big bodies
  are parsed off the event loop;
- a JSON-RPC batch holds at most 100 calls, each of which needs a session (a login or
  `system.listMethods` in a batch is refused unrun), and its reply stops growing at 64 MiB;
- strings must be Unicode scalar values (a lone surrogate is a parse error) and nesting
  beyond what the decoders take is a parse error too, never a 500.
Once a call runs it runs to its end even if the client goes away (as xapi's calls do), except
the long polls (`event.from`, `event.next`), which end with their connection.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
from typing import Any

from aiohttp import web

from ..core import calls
from ..core.context import Services
from ..model.errors import XenAPIError
from ..model.xtypes import all_text, format_datetime
from ..wire.xmlrpc import XMLRPCParseError, dumps_response, failure, parse_call, success
from .access import note_failure
from .appkeys import SERVICES
from .auth import is_local

__all__ = ["routes", "MAX_BATCH", "SMALL_BODY", "SESSION_WITHIN"]

# Why `Access-Control-Allow-Origin: *`: browser clients (XO Lite, served from elsewhere) call
# the API cross-origin, and credentials travel in the body (a session ref), never in cookies
# or HTTP auth the browser would add by itself, so another origin's page gains nothing.
CORS = {"Access-Control-Allow-Origin": "*"}

SMALL_BODY = 64 * 1024          # read and parsed without questions
SESSION_WITHIN = 4096           # where a bigger body must name its session
MAX_BATCH = 100                 # JSON-RPC calls per batch
MAX_BATCH_REPLY = 64 * 2**20    # bytes of a batch's reply; later calls answer an error
LONG_POLLS = frozenset({"event.from", "event.next", "event_from", "event_next"})
_REF = re.compile(rb"OpaqueRef:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


async def _read_body(request: web.Request, services: Services) -> bytes:
    """The body, bounded: up to SMALL_BODY as is; beyond, only with a live session named in
    its first SESSION_WITHIN bytes, and never past `max_rpc_body`."""
    limit = services.config.max_rpc_body
    if request.content_length is not None and request.content_length > limit:
        raise _Refused(413, f"request body over {limit} bytes")
    buf = bytearray()
    while len(buf) <= SMALL_BODY:
        chunk = await request.content.read(SMALL_BODY + 1 - len(buf))
        if not chunk:
            return bytes(buf)
        buf += chunk
    head = bytes(buf[:SESSION_WITHIN])
    if not any(services.sessions.valid(m.group().decode()) for m in _REF.finditer(head)):
        raise _Refused(413, f"a request body over {SMALL_BODY} bytes must name a live session "
                            f"within its first {SESSION_WITHIN} bytes")
    while True:
        chunk = await request.content.read(1 << 20)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise _Refused(413, f"request body over {limit} bytes")


async def _decode(services: Services, body: bytes, parse):
    if len(body) <= SMALL_BODY:
        return parse(body)
    return await asyncio.get_running_loop().run_in_executor(services.executors.disk, parse, body)


async def _run(request: web.Request, method: str, params: list) -> Any:
    """One call; shielded from the client going away unless it is a long poll."""
    services = request.app[SERVICES]
    call = calls.call(services, method, params, local=is_local(request),
                      source=request.remote or "")
    try:
        if method in LONG_POLLS:
            return await call
        task = asyncio.ensure_future(call)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_unread)     # it runs to its end; nobody reads the answer
            raise
    except XenAPIError as e:
        note_failure(request, method, e.code)  # the access log names it
        raise


def _unread(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def _gone() -> web.Response:
    """The client went away mid-body: nothing ran, nothing to log, nobody to answer."""
    resp = web.Response(status=400)
    resp.force_close()
    return resp


def _refused(resp: web.Response) -> web.Response:
    resp.force_close()      # what the client has not sent yet is not read
    return resp


# --- XML-RPC -----------------------------------------------------------------------------
async def xmlrpc(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        body = await _read_body(request, services)
        method, params = await _decode(services, body, parse_call)
    except _Refused as e:
        return _refused(web.Response(status=e.status, text=f"{e}\n", headers=CORS))
    except ConnectionError:
        return _gone()
    except XMLRPCParseError as e:
        return web.Response(status=400, text=f"Bad XML-RPC request: {e}\n", headers=CORS)
    try:
        envelope = success(await _run(request, method, params))
    except XenAPIError as e:
        envelope = failure(e.description)
    return web.Response(body=dumps_response(envelope), content_type="text/xml", headers=CORS)


# --- JSON-RPC ----------------------------------------------------------------------------
def _json_default(v: Any) -> Any:
    if isinstance(v, _dt.datetime):
        return format_datetime(v)
    raise TypeError(f"cannot encode {type(v).__name__}")


def _json_error(status: int, code: int, message: str) -> web.Response:
    body = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": None}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/json", headers=CORS)


def parse_json(body: bytes) -> Any:
    """UTF-8 JSON whose strings are all Unicode scalar values; ValueError otherwise."""
    try:
        text = body.decode("utf-8")
        payload = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text) and not all_text(payload):
        raise ValueError("a string holds a lone surrogate (not a Unicode scalar value)")
    return payload


def _invalid(call: Any, message: str = "Invalid Request") -> dict:
    return {"jsonrpc": "2.0", "error": {"code": -32600, "message": message},
            "id": call.get("id") if isinstance(call, dict) else None}


async def _json_call(request: web.Request, call: Any, *, batched: bool = False) -> dict:
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        return _invalid(call)
    method = call["method"]
    if batched:
        try:
            msg, _ = request.app[SERVICES].dispatcher.lookup(method)
        except XenAPIError:
            msg = None
        if msg is not None and not msg.session:
            return _invalid(call, "Invalid Request: a call without a session in a batch")
    v2 = call.get("jsonrpc") == "2.0"
    params = call.get("params", [])
    if isinstance(params, dict):   # by-name params: keep the order the client wrote them in
        params = list(params.values())
    if not isinstance(params, list):
        params = [params]
    try:
        value = await _run(request, method, params)
    except XenAPIError as e:
        if v2:
            return {"jsonrpc": "2.0", "error": {"code": 1, "message": e.code, "data": e.params},
                    "id": call.get("id")}
        return {"result": None, "error": e.description, "id": call.get("id")}
    if v2:
        return {"jsonrpc": "2.0", "result": value, "id": call.get("id")}
    return {"result": value, "error": None, "id": call.get("id")}


def _encode(out: Any) -> bytes:
    return json.dumps(out, default=_json_default).encode()


async def _batch(request: web.Request, payload: list) -> bytes:
    parts: list[bytes] = []
    size = 2
    for call in payload:
        if size > MAX_BATCH_REPLY:
            part = _encode(_invalid(call, f"Invalid Request: the batch's reply passed "
                                          f"{MAX_BATCH_REPLY} bytes"))
        else:
            part = _encode(await _json_call(request, call, batched=True))
        parts.append(part)
        size += len(part) + 1
    return b"[" + b",".join(parts) + b"]"


async def jsonrpc(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        body = await _read_body(request, services)
        payload = await _decode(services, body, parse_json)
    except _Refused as e:
        return _refused(_json_error(e.status, -32600, str(e)))
    except ConnectionError:
        return _gone()
    except ValueError as e:
        return _json_error(400, -32700, f"Parse error: {e}")
    if isinstance(payload, list):
        if not payload:
            return _json_error(400, -32600, "Invalid Request: empty batch")
        if len(payload) > MAX_BATCH:
            return _json_error(400, -32600, f"Invalid Request: more than {MAX_BATCH} calls "
                                            "in one batch")
        data = await _batch(request, payload)
    else:
        data = _encode(await _json_call(request, payload))
    # exactly `application/json`: Xen Orchestra takes anything else (even `; charset=utf-8`,
    # which JSON does not need) for a host without JSON-RPC and falls back to XML-RPC
    return web.Response(body=data, content_type="application/json", headers=CORS)


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
