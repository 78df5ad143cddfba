"""An HTTP request's `task_id` task ends when the request does, as xapi's handlers end it.

Xen Orchestra creates a task for every request it makes (statistics polls included) and waits
for it; a handler that does not finish the task itself (the transfer handlers do, with their
result) leaves it here: success for a 2xx/3xx answer, failure with the error otherwise. Only a
request whose credentials were good may end a task, so nobody can fail a task by naming it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web

from ..model.errors import XenAPIError
from .appkeys import SERVICES
from .auth import AUTHENTICATED

__all__ = ["tasks_middleware"]


def _task_id(request: web.Request) -> str | None:
    return request.query.get("task_id") or request.cookies.get("task_id") or None


def _finish(request: web.Request, error: XenAPIError | None) -> None:
    ref = _task_id(request)
    if ref is None or not request.get(AUTHENTICATED):
        return
    tasks = request.app[SERVICES].tasks
    rec = request.app[SERVICES].store.find("task", ref)
    if rec is None or rec["status"] not in ("pending", "cancelling"):
        return
    if error is None:
        tasks.succeed(ref)
    else:
        tasks.fail(ref, error)


@web.middleware
async def tasks_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except asyncio.CancelledError:
        _finish(request, XenAPIError("TASK_CANCELLED", _task_id(request) or ""))
        raise
    except web.HTTPException as e:
        _finish(request, None if e.status < 400 else
                XenAPIError("INTERNAL_ERROR", f"HTTP {e.status} {e.reason}"))
        raise
    if resp.status < 400:
        _finish(request, None)
    else:
        code = resp.headers.get("X-XenAPI-Error", "INTERNAL_ERROR")
        _finish(request, XenAPIError(code, f"HTTP {resp.status} {resp.reason}"))
    return resp
