"""The one credential check every HTTP handler uses (export, import, statistics, consoles).

Order, as xapi: `session_id` cookie, then `session_id` in the query, then `Authorization: Basic`
(a temporary session, logged out when the request ends). Unix-socket callers are root.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from contextlib import asynccontextmanager
from typing import AsyncIterator

from aiohttp import web

from .keys import AGENT
from .rpc import is_local

__all__ = ["http_session", "unauthorized"]


def unauthorized(realm: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(headers={"WWW-Authenticate": f'Basic realm="{realm}"'},
                                text="Unauthorized\n")


def _basic(header: str) -> tuple[str, str] | None:
    scheme, _, data = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(data.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


@asynccontextmanager
async def http_session(request: web.Request, realm: str = "xapi") -> AsyncIterator[str]:
    """Yield a valid session ref for this request or raise 401."""
    agent = request.app[AGENT]
    sessions = agent.sessions
    sid = request.cookies.get("session_id") or request.query.get("session_id")
    if sid:
        if not sessions.valid(sid):
            raise unauthorized(realm)
        sessions.check(sid)
        yield sid
        return
    creds = _basic(request.headers.get("Authorization", ""))
    local = is_local(request)
    if creds is None and not local:
        raise unauthorized(realm)
    if not local:
        ok = await asyncio.get_running_loop().run_in_executor(None, sessions.password_ok, *creds)
        if not ok:
            await asyncio.sleep(sessions.fail_delay)
            raise unauthorized(realm)
    temp = sessions.open_session(creds[0] if creds else "root", originator="http-basic")
    try:
        yield temp
    finally:
        sessions.logout(temp)
