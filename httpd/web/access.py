"""The access log: one line per HTTP request, at INFO on the `xcp_httpd.access` logger.

    127.0.0.1 PUT /import?sr_uuid=... 200 312B 1.84s task=OpaqueRef:... error=-
    127.0.0.1 POST /jsonrpc 200 160B 2.1ms task=- error=VM.start:VM_BAD_POWER_STATE

What a line never holds: credentials (Basic auth and cookies are headers, not logged) and
session ids (a `session_id=` or password in the query shows as `***`). A request's error is
its XenAPI code: the `X-XenAPI-Error` an HTTP handler answered with, or, for RPC, each failed
call as `method:CODE` (a batch's first few and how many more).
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["AccessLog", "ACCESS_LOGGER", "note_failure"]

ACCESS_LOGGER = logging.getLogger("xcp_httpd.access")

_SECRET = frozenset({"session_id", "password", "pw", "passwd", "pwd"})
_FAILURES = "xcp_httpd.failures"      # request key: the RPC calls that failed, as method:CODE
_SHOWN = 3                            # failed calls of a batch named in one line


def note_failure(request: web.Request, method: str, code: str) -> None:
    """An RPC call of `request` failed with `code` (for its access-log line). The method is
    the client's text: quoted and cut, so it cannot forge a line of the log."""
    request.setdefault(_FAILURES, []).append(f"{quote(method[:80], safe='._')}:{code}")


def logged_path(request: web.BaseRequest) -> str:
    """The path (as sent, still percent-encoded: a %0A stays three characters, never a new
    line of the log) and the query, with secrets masked."""
    path = request.rel_url.raw_path
    if not request.query_string:
        return path
    parts = [f"{quote(k, safe='')}={'***' if k.lower() in _SECRET else quote(v, safe=':-')}"
             for k, v in request.query.items()]
    return path + "?" + "&".join(parts)


def _error(request: web.BaseRequest, response: web.StreamResponse) -> str:
    failed = request.get(_FAILURES)
    if failed:
        more = f",+{len(failed) - _SHOWN}" if len(failed) > _SHOWN else ""
        return ",".join(failed[:_SHOWN]) + more
    return response.headers.get("X-XenAPI-Error", "-")


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


class AccessLog(AbstractAccessLogger):
    """aiohttp's access-log hook (`AppRunner(access_log_class=AccessLog)`)."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        task = response.headers.get("task-id") or request.query.get("task_id") or "-"
        self.logger.info("%s %s %s %s %dB %s task=%s error=%s", request.remote or "local",
                         request.method, logged_path(request), response.status,
                         response.body_length, _duration(time), task,
                         _error(request, response))
