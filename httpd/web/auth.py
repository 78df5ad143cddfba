"""The one credential check every HTTP handler uses (export, import, statistics, consoles).

Order, as xapi: `session_id` cookie, then `session_id` in the query, then `Authorization: Basic`
(a temporary session, logged out when the request ends). Unix-socket callers are root
(`is_local_socket`, the one place that says so). Passwords go through
`SessionManager.authenticate`, the same login policy as `session.login_with_password`.

`http_session` serves aiohttp requests; `credentials_session` is the same check for callers
that read the request head themselves (`CONNECT /console`, which aiohttp never sees).
"""

from __future__ import annotations

import base64
import binascii
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

from aiohttp import web

from ..core.sessions import SessionManager
from ..model.errors import XenAPIError
from .appkeys import SERVICES

__all__ = ["Credentials", "credentials_session", "http_session", "unauthorized",
           "is_local", "is_local_socket"]


def is_local_socket(sock: socket.socket | None) -> bool:
    """Unix-socket callers are root on this host (the guide's local transport)."""
    return sock is not None and sock.family == socket.AF_UNIX


def is_local(request: web.Request) -> bool:
    return is_local_socket(request.transport.get_extra_info("socket")
                           if request.transport else None)


def unauthorized(realm: str, code: str | None = None) -> web.HTTPUnauthorized:
    """401 asking for Basic auth; `code` (the XenAPI error the credentials met) goes in
    `X-XenAPI-Error`, as other failures' codes do (the access log shows it)."""
    headers = {"WWW-Authenticate": f'Basic realm="{realm}"'}
    if code:
        headers["X-XenAPI-Error"] = code
    return web.HTTPUnauthorized(headers=headers, text="Unauthorized\n")


@dataclass(frozen=True)
class Credentials:
    """What a request offers to prove who it is, whatever read its head."""

    cookie: str | None = None     # the session_id cookie
    query: str | None = None      # the session_id query parameter
    authorization: str = ""       # the Authorization header
    local: bool = False           # arrived on the Unix socket
    source: str = ""              # the client's address (logins are slowed per source)

    @classmethod
    def of_request(cls, request: web.Request) -> "Credentials":
        return cls(cookie=request.cookies.get("session_id"),
                   query=request.query.get("session_id"),
                   authorization=request.headers.get("Authorization", ""),
                   local=is_local(request), source=request.remote or "")


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
async def credentials_session(sessions: SessionManager, creds: Credentials,
                              realm: str = "xapi") -> AsyncIterator[str]:
    """Yield a valid session ref for these credentials or raise 401 (web.HTTPUnauthorized)."""
    sid = creds.cookie or creds.query
    if sid:
        if not sessions.valid(sid):
            raise unauthorized(realm, "SESSION_INVALID")
        sessions.check(sid)
        yield sid
        return
    basic = _basic(creds.authorization)
    if basic is None and not creds.local:
        raise unauthorized(realm)
    if not creds.local:
        try:
            await sessions.authenticate(*basic, source=creds.source)
        except XenAPIError as e:
            raise unauthorized(realm, e.code) from None
    temp = sessions.open_session(basic[0] if basic else "root", originator="http-basic")
    try:
        yield temp
    finally:
        sessions.logout(temp)


@dataclass(frozen=True)
class Caller:
    """Who good credentials made a request's caller (for its task_id)."""
    session: str
    user: str
    one_request: bool          # Basic auth's own session, gone when the request ends


AUTHENTICATED = web.RequestKey("authenticated", Caller)


@asynccontextmanager
async def http_session(request: web.Request, realm: str = "xapi") -> AsyncIterator[str]:
    """Yield a valid session ref for this request or raise 401."""
    async with credentials_session(request.app[SERVICES].sessions,
                                   Credentials.of_request(request), realm) as sid:
        rec = request.app[SERVICES].store.get("session", sid)
        request[AUTHENTICATED] = Caller(sid, rec["auth_user_name"],   # its own task_id may
                                        rec["originator"] == "http-basic")  # now be completed
        yield sid
