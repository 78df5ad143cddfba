"""Local console forwarder (`xcp-httpd console-forward`, `xe console`).

Listens on 127.0.0.1:<port>; for each viewer that connects it opens a
connection to the agent, sends `CONNECT /console?... HTTP/1.0` with the
session cookie or Basic credentials, checks for 200 and then pipes, so any
VNC viewer (which knows nothing of HTTP CONNECT) can use a console.  A 302
(the VM runs on another host of the pool) is followed, a few hops at most,
with the same credentials: sessions and the root password are pool-wide.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl as ssl_module
from typing import Awaitable, Callable

from yarl import URL

from .tunnel import Tunnel, splice, tune_socket

__all__ = ["ConsoleForwarder", "ForwardError", "connect_console"]

log = logging.getLogger(__name__)

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*")
_LOCATION = re.compile(rb"\r\nlocation:[ \t]*([^\r\n]*)", re.IGNORECASE)
_MAX_REPLY_HEAD = 8192
MAX_REDIRECTS = 3


class ForwardError(ConnectionError):
    """The agent refused or botched the CONNECT; `status` is its HTTP status (0: no valid reply)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _ReplyReader(asyncio.Protocol):
    """Collects the agent's reply head, then holds further bytes until the pipe takes over."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf or len(self.buf) > _MAX_REPLY_HEAD:
            self.transport.pause_reading()
            if not self.done.done():
                self.done.set_result(None)

    def eof_received(self) -> bool:
        if not self.done.done():
            self.done.set_result(None)
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def connect_console(url: str | URL, *, session_id: str | None = None,
                          username: str | None = None, password: str | None = None,
                          ssl_context: ssl_module.SSLContext | None = None, host_header: str | None = None,
                          timeout: float = 10.0,
                          redirects: int = MAX_REDIRECTS) -> tuple[asyncio.Transport, _ReplyReader, bytes]:
    """Open the agent connection and perform the CONNECT, following up to `redirects` 302s;
    returns (transport, protocol, bytes after the head)."""
    url = URL(url)
    for _ in range(redirects):
        try:
            return await _connect_once(url, session_id=session_id, username=username,
                                       password=password, ssl_context=ssl_context,
                                       host_header=host_header, timeout=timeout)
        except _Redirect as moved:
            log.info("console %s is served at %s", url.raw_path_qs, moved.location)
            url, host_header = url.join(moved.location), None
    return await _connect_once(url, session_id=session_id, username=username, password=password,
                               ssl_context=ssl_context, host_header=host_header, timeout=timeout)


class _Redirect(ForwardError):
    def __init__(self, message: str, location: URL) -> None:
        super().__init__(message, 302)
        self.location = location


async def _connect_once(url: URL, *, session_id: str | None, username: str | None,
                        password: str | None, ssl_context: ssl_module.SSLContext | None,
                        host_header: str | None, timeout: float
                        ) -> tuple[asyncio.Transport, _ReplyReader, bytes]:
    if url.scheme not in ("http", "https"):
        raise ValueError(f"console URL must be http or https, not {url.scheme!r}")
    loop = asyncio.get_running_loop()
    ssl = (ssl_context or ssl_module.create_default_context()) if url.scheme == "https" else None
    lines = [f"CONNECT {url.raw_path_qs} HTTP/1.0", f"Host: {host_header or url.raw_authority}"]
    if session_id is not None:
        lines.append(f"Cookie: session_id={session_id}")
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        lines.append(f"Authorization: Basic {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, reader = await loop.create_connection(
                _ReplyReader, url.host, url.port, ssl=ssl, server_hostname=url.host if ssl else None)
            tune_socket(transport)
            transport.write(request)
            await reader.done
    except (OSError, TimeoutError) as exc:
        if transport is not None:
            transport.abort()
        raise ForwardError(f"cannot reach {url.origin()}: {exc!r}") from exc
    end = reader.buf.find(b"\r\n\r\n")
    match = _STATUS_LINE.match(reader.buf)
    if end < 0 or match is None:
        transport.abort()
        raise ForwardError(f"no valid reply to CONNECT from {url.origin()}: {bytes(reader.buf[:80])!r}")
    status = int(match[1])
    if status != 200:
        transport.abort()
        message = f"CONNECT {url.raw_path_qs} refused: {match[0].decode('latin-1')}"
        location = _LOCATION.search(reader.buf, 0, end + 2)
        if status == 302 and location is not None:
            target = URL(location[1].decode("latin-1").strip())
            if target.scheme in ("http", "https") or not target.is_absolute():
                raise _Redirect(message, target)
        raise ForwardError(message, status)
    return transport, reader, bytes(reader.buf[end + 4:])


class _Viewer(asyncio.Protocol):
    """A local viewer connection, held paused until the agent accepted the CONNECT."""

    def __init__(self, forwarder: "ConsoleForwarder") -> None:
        self._forwarder = forwarder
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.pause_reading()
        tune_socket(transport)
        self._forwarder._spawn(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


class ConsoleForwarder:
    """Forward local viewers on 127.0.0.1:`port` to the console at `url` (its `location`),
    or, with `resolve`, to the (URL, session id) it answers for each viewer: a caller that
    looks the console up again each time follows a VM across reboots (a new console) and
    agent restarts (a new session). `resolve` raises ForwardError when there is none."""

    def __init__(self, url: str | None = None, *, session_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 ssl_context: ssl_module.SSLContext | None = None,
                 host_header: str | None = None, listen_host: str = "127.0.0.1", port: int = 0,
                 connect_timeout: float = 10.0,
                 resolve: Callable[[], Awaitable[tuple[URL, str | None]]] | None = None
                 ) -> None:
        if (url is None) == (resolve is None):
            raise ValueError("give the console's url or a resolve function, not both")
        self.url = URL(url) if url is not None else None
        self._resolve = resolve
        self._auth = dict(session_id=session_id, username=username, password=password,
                          ssl_context=ssl_context, host_header=host_header, timeout=connect_timeout)
        self.listen_host = listen_host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.tunnels: set[Tunnel] = set()
        self.failures: list[ForwardError] = []  # recent refusals, for the CLI to report

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Viewer(self), self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def _spawn(self, viewer: _Viewer) -> None:
        task = asyncio.get_running_loop().create_task(self._forward(viewer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, viewer: _Viewer) -> None:
        try:
            if self._resolve is None:
                agent, _, leftover = await connect_console(self.url, **self._auth)
            else:
                url, session_id = await self._resolve()
                agent, _, leftover = await connect_console(
                    url, **{**self._auth, "session_id": session_id})
        except ForwardError as exc:
            log.warning("console forward failed: %s", exc)
            self.failures = (self.failures + [exc])[-16:]
            viewer.transport.close()
            return
        except BaseException:
            viewer.transport.abort()
            raise
        if viewer.lost:
            agent.close()
            return
        tunnel = splice(viewer.transport, agent, client_initial=bytes(viewer.buf), server_initial=leftover)
        self.tunnels.add(tunnel)
        tunnel.add_done_callback(self.tunnels.discard)

    async def stop(self) -> None:
        """Stop listening and close every forwarded connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for tunnel in list(self.tunnels):
            tunnel.close("forwarder stopped")
        await asyncio.gather(*(t.wait_closed() for t in list(self.tunnels)))
