"""The one mapping from failures to HTTP answers, and the middleware that applies it.

XenAPI failures become their status (`model.errors.http_status`) and a one-line body naming
the code; anything unexpected a logged 500 without a traceback; `CancelledError` is always
re-raised; once body bytes went out, no error page (the connection is cut instead).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiohttp import web

from ..model.errors import XenAPIError, http_status

__all__ = ["error_response", "errors_middleware", "abort"]

log = logging.getLogger(__name__)


def error_response(e: XenAPIError, task: str | None = None) -> web.Response:
    headers = {"X-XenAPI-Error": e.code}
    if task:
        headers["task-id"] = task
    return web.Response(status=http_status(e), text=" ".join(e.description) + "\n",
                        headers=headers)


def abort(request: web.Request) -> None:
    """After body bytes went out an error page is impossible: cut the connection instead."""
    if request.transport is not None:
        request.transport.abort()


@web.middleware
async def errors_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    """HTTP handlers raise XenAPIError; here it becomes a status and a one-line body."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except XenAPIError as e:
        return error_response(e)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - logged, never a traceback to the client
        log.exception("%s %s failed", request.method, request.path)
        return web.Response(status=500, text="Internal error\n",
                            headers={"X-XenAPI-Error": "INTERNAL_ERROR"})
