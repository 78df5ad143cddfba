"""Calls from this agent to another agent (the pool's internal RPC) and to a master it joins.

JSON-RPC over HTTP(S) with aiohttp's client. Calls to the agents of the pool log in with
`session.slave_login(host, pool secret)` (a pool session: a slave runs its calls instead
of answering HOST_IS_SLAVE); the secret never travels in another call, and the root
password is never used between agents.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import aiohttp

from ..model.errors import XenAPIError
from ..model.identity import ThisHost
from ..model.store import Store
from .pool_role import agent_ref
from .resident import origin_of

__all__ = ["Peers", "Remote"]

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=None)


class Remote:
    """One agent, by URL: `call(method, *params)` answers the result or raises the XenAPI
    error the agent answered (POOL_JOINING_HOST_CONNECTION_FAILED when it cannot be reached)."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url.rstrip("/")

    async def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                           "id": 1}, default=str)
        try:
            async with self.http.post(f"{self.url}/jsonrpc", data=body, timeout=TIMEOUT,
                                      headers={"Content-Type": "application/json"}) as resp:
                reply = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise XenAPIError("POOL_JOINING_HOST_CONNECTION_FAILED",
                              f"{self.url}: {e}") from None
        if not isinstance(reply, dict):
            raise XenAPIError("POOL_JOINING_HOST_CONNECTION_FAILED", f"{self.url}: no reply")
        if reply.get("error"):
            err = reply["error"]
            raise XenAPIError(str(err.get("message")), *[str(p) for p in err.get("data") or []])
        return reply.get("result")


class Peers:
    """The other agents of this pool, each reached at the URL its heartbeat gives."""

    def __init__(self, store: Store, host: ThisHost, secret: str,
                 base_url: Callable[[], str]) -> None:
        self.store = store
        self.base_url = base_url
        self.host = host
        self.secret = secret        # this agent's pool secret (read once: a change restarts it)
        self._http: aiohttp.ClientSession | None = None
        self._sessions: dict[str, str] = {}     # host -> pool session on its agent

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def remote(self, url: str) -> Remote:
        return Remote(self.http, url)

    def url_of(self, host: str) -> str:
        agent = self.store.find("host_agent", agent_ref(host))
        if agent is not None and agent["url"]:
            return agent["url"]
        # not heard from yet: its address, on this agent's scheme and port (a pool's hosts
        # share them)
        origin = origin_of(self.store, host, host_ref=self.host.host_ref,
                           base_url=self.base_url())
        if origin is None:
            raise XenAPIError("HOST_OFFLINE", host)
        return origin

    async def call(self, host: str, method: str, *params: Any) -> Any:
        """`method` run by `host`'s agent, in a pool session there."""
        remote = self.remote(self.url_of(host))
        for attempt in (1, 2):
            session = self._sessions.get(host)
            if session is None:
                session = await remote.call("session.slave_login", self.host.host_ref,
                                            self.secret)
                self._sessions[host] = session
            try:
                return await remote.call(method, session, *params)
            except XenAPIError as e:
                if e.code != "SESSION_INVALID" or attempt == 2:
                    raise
                self._sessions.pop(host, None)
        raise AssertionError("unreachable")
