"""Byte tunnels between a console client and a VNC server, at the asyncio Protocol level.

Each direction is a pair of Protocol callbacks: `data_received` writes straight
into the other transport and the other transport's `pause_writing` pauses our
reading, so a slow reader slows the fast writer without a buffer growing
anywhere and without a task per direction (the transports' 256 KiB reads go
through untouched).  EOF from one side becomes `write_eof` on the other
(half-close) where the transport can do it; TLS cannot, so it closes instead.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Awaitable, Callable, Union

from .activity import RfbActivityScanner

__all__ = [
    "Upstream",
    "UpstreamUnavailable",
    "UpstreamBusy",
    "Openings",
    "Tunnel",
    "IdleWatch",
    "splice",
    "connect_upstream",
    "open_tunnel",
    "reply_error",
    "tune_socket",
    "CONNECT_OK",
]

log = logging.getLogger(__name__)

Upstream = Union[tuple[str, int], str]  # (host, port) or a Unix socket path

# xapi's exact reply to an accepted CONNECT.
CONNECT_OK = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nCache-Control: no-cache, no-store\r\n\r\n"

# Enough to keep a 10 GbE loopback busy between wakeups, small enough per idle tunnel.
_HIGH_WATER = 256 * 1024

_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    408: "Request Timeout", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable", 302: "Found",
}


class UpstreamUnavailable(ConnectionError):
    """The console's VNC server is not reachable (xapi answers 404: no console server running)."""


class UpstreamBusy(UpstreamUnavailable):
    """This connection's turn to be opened did not come within its timeout (answer 503)."""


class Openings:
    """Console connections are opened `limit` at a time; the others wait for a turn.

    Opening one (connect, the server's greeting, the reply) is a few callbacks on the loop;
    a burst of 500 CONNECTs opened all at once has every turn of the loop run hundreds of
    them, and every other client (a login, a statistics poll) waits behind the lot. Taken in
    turns, the loop's turns stay short; waiting for one costs nothing. The turn is held only
    while opening, never while a tunnel is open, and within the connection's own timeout.
    """

    def __init__(self, limit: int = 16) -> None:
        self._turns = asyncio.Semaphore(limit)

    async def open(self, upstream: Upstream, factory: Callable[[], asyncio.Protocol],
                   timeout: float, then: Callable[[], Awaitable[object]] | None = None) -> None:
        """Connect `factory()` to `upstream` (and await `then()`) in a turn, within `timeout`:
        UpstreamBusy if no turn came, UpstreamUnavailable if the connect (or `then`) failed
        or did not end in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                await self._turns.acquire()
        except TimeoutError:
            raise UpstreamBusy(f"console server {upstream!r}: too many consoles being opened "
                               f"at once; none could be opened within {timeout:g} s") from None
        try:
            async with asyncio.timeout_at(deadline):
                if isinstance(upstream, str):
                    await loop.create_unix_connection(factory, upstream)
                else:
                    await loop.create_connection(factory, *upstream)
                if then is not None:
                    await then()
        except (OSError, TimeoutError) as exc:
            raise UpstreamUnavailable(f"console server {upstream!r} is not reachable: "
                                      f"{exc or 'it did not answer'}") from exc
        finally:
            self._turns.release()


def tune_socket(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY and SO_KEEPALIVE, as xapi sets on both legs; a no-op for Unix sockets."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass  # already closed by the peer: the pipe will notice


def reply_error(transport: asyncio.BaseTransport, status: int, *, message: str | None = None,
                realm: str | None = None, location: str | None = None) -> None:
    """Answer a CONNECT (or unparseable request) with an error and close: 401 carries
    `WWW-Authenticate: Basic realm=...`, 302 a `Location`."""
    reason = _REASONS.get(status, "Error")
    body = ((message or reason) + "\n").encode("utf-8", "replace")
    lines = [f"HTTP/1.1 {status} {reason}", "Connection: close", "Content-Type: text/plain; charset=utf-8",
             f"Content-Length: {len(body)}"]
    if status == 401:
        lines.append(f'WWW-Authenticate: Basic realm="{realm or "xapi"}"')
    if location is not None:
        if any(c in location for c in "\r\n"):
            raise ValueError("Location must not contain CR or LF")
        lines.append(f"Location: {location}")
    if not transport.is_closing():
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)  # type: ignore[attr-defined]
        transport.close()


class IdleWatch:
    """Calls `on_idle` once no RFB input activity has been seen for `timeout` seconds."""

    def __init__(self, timeout: float, on_idle: Callable[[], None]) -> None:
        self.scanner = RfbActivityScanner()
        self._timeout = timeout
        self._on_idle = on_idle
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._handle = self._loop.call_later(timeout, self._check)

    def client_bytes(self, data: bytes) -> None:
        if self.scanner.feed_client(data):
            self._last = self._loop.time()

    def server_bytes(self, data: bytes) -> None:
        if self.scanner.needs_server_bytes:
            self.scanner.feed_server(data)

    def _check(self) -> None:
        remaining = self._last + self._timeout - self._loop.time()
        if remaining > 0:  # re-arm lazily instead of resetting a timer on every message
            self._handle = self._loop.call_later(remaining, self._check)
        else:
            self._handle = None
            self._on_idle()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _End(asyncio.Protocol):
    """One leg of a tunnel; bytes it receives go to the other leg's transport."""

    def __init__(self, tunnel: "Tunnel", name: str) -> None:
        self.tunnel = tunnel
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.eof = False
        self.lost = False
        self.nbytes = 0
        self._early: list[bytes] = []  # received before the peer leg existed
        self.spoke = asyncio.get_running_loop().create_future()   # first bytes, EOF or loss

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.attach(transport)  # type: ignore[arg-type]

    def attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        tune_socket(transport)
        try:
            transport.set_write_buffer_limits(high=_HIGH_WATER)
        except (AttributeError, NotImplementedError):
            pass

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if not self.spoke.done():
            self.spoke.set_result(True)
        if peer is None or peer.transport is None:
            self._early.append(data)
            self.transport.pause_reading()
            return
        self.nbytes += len(data)
        self.tunnel._observe(self, data)
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        if not self.spoke.done():
            self.spoke.set_result(False)
        peer = self.peer
        if peer is None or peer.transport is None:
            return False
        if peer.transport.can_write_eof():
            if not peer.transport.is_closing():
                peer.transport.write_eof()
            if peer.eof:  # both directions finished: flush and close
                self.transport.close()
                peer.transport.close()
            # keep this leg open to carry the other direction (TLS cannot: asyncio closes it)
            return self.transport.can_write_eof()
        peer.transport.close()  # TLS leg: no half-close, flush and close
        return False

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost and not peer.eof:
            peer.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        if not self.spoke.done():
            self.spoke.set_result(False)
        self.tunnel._leg_lost(self, exc)


class Tunnel:
    """A running client<->server pipe; `close()` is the handle the daemon keeps (VM stopped, shutdown)."""

    def __init__(self, *, idle_timeout: float | None = None) -> None:
        self.client = _End(self, "client")
        self.server = _End(self, "server")
        self.client.peer, self.server.peer = self.server, self.client
        self.close_reason: str | None = None
        self._done = asyncio.get_running_loop().create_future()
        self._idle = IdleWatch(idle_timeout, self._idle_expired) if idle_timeout else None

    @property
    def bytes_from_client(self) -> int:
        return self.client.nbytes

    @property
    def bytes_from_server(self) -> int:
        return self.server.nbytes

    @property
    def closed(self) -> bool:
        return self._done.done()

    def _observe(self, end: _End, data: bytes) -> None:
        if self._idle is not None:
            (self._idle.client_bytes if end is self.client else self._idle.server_bytes)(data)

    def _idle_expired(self) -> None:
        self.close("idle timeout")

    def close(self, reason: str = "closed") -> None:
        """Tear both legs down now (pending output is discarded)."""
        if self.close_reason is None:
            self.close_reason = reason
        for end in (self.client, self.server):
            if end.transport is not None and not end.lost:
                end.transport.abort()
        self._finish_if_done()

    def add_done_callback(self, callback: Callable[["Tunnel"], None]) -> None:
        """Call `callback(tunnel)` once both legs are closed (registries use this to forget it)."""
        self._done.add_done_callback(lambda _: callback(self))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def _leg_lost(self, end: _End, exc: BaseException | None) -> None:
        if self.close_reason is None:
            self.close_reason = f"{end.name} closed" + (f": {exc}" if exc else "")
        peer = end.peer
        if peer.transport is not None and not peer.lost:
            peer.transport.close()  # flush what the gone side sent, then close
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        legs = (self.client, self.server)
        if all(end.lost or end.transport is None for end in legs) and not self._done.done():
            if self._idle is not None:
                self._idle.cancel()
            self._done.set_result(None)

    def _start(self, client_initial: bytes, server_initial: bytes) -> None:
        for end, initial in ((self.client, client_initial), (self.server, server_initial)):
            early, end._early = end._early, []
            for chunk in ([initial] if initial else []) + early:
                end.data_received(chunk)
        for end in (self.client, self.server):
            if end.transport is not None and not end.lost:
                end.transport.resume_reading()


def splice(client: asyncio.Transport, server: asyncio.Transport | "Tunnel", *,
           client_initial: bytes = b"", server_initial: bytes = b"",
           idle_timeout: float | None = None) -> Tunnel:
    """Pipe two already-open transports; `client_initial` goes to the server, `server_initial` to the client."""
    if isinstance(server, Tunnel):
        tunnel = server  # legs made by connect_upstream: the server leg is already attached
    else:
        tunnel = Tunnel(idle_timeout=idle_timeout)
        server.set_protocol(tunnel.server)
        tunnel.server.attach(server)
    client.set_protocol(tunnel.client)
    tunnel.client.attach(client)
    if client.is_closing():
        tunnel.client.lost = True
        tunnel._leg_lost(tunnel.client, None)
        return tunnel
    tunnel._start(client_initial, server_initial)
    return tunnel


async def connect_upstream(upstream: Upstream, *, timeout: float = 10.0,
                           idle_timeout: float | None = None,
                           server_speaks_first: bool = False,
                           openings: Openings | None = None) -> Tunnel:
    """Connect to the VNC server (in a turn of `openings`); returns a Tunnel whose server leg
    is live and holding its input.

    `server_speaks_first` (RFB: the server sends its version first): also wait, within
    `timeout`, for the server's first bytes. A connect can succeed on a listen queue that is
    full (the kernel completes it, the server never accepts it); only the first bytes prove
    a server is there, so none means UpstreamUnavailable, before any 200 is sent."""
    tunnel = Tunnel(idle_timeout=idle_timeout)

    async def greeted() -> None:
        if not await tunnel.server.spoke:
            raise ConnectionResetError("closed without a word")
    try:
        await (openings or Openings()).open(upstream, lambda: tunnel.server, timeout,
                                            greeted if server_speaks_first else None)
    except UpstreamUnavailable as exc:
        tunnel.close("no turn to open" if isinstance(exc, UpstreamBusy)
                     else "upstream unreachable")
        raise
    if not tunnel.server.lost:
        tunnel.server.transport.pause_reading()  # until the client leg is attached
    return tunnel


async def open_tunnel(client: asyncio.Transport, upstream: Upstream, *, initial: bytes = b"",
                      idle_timeout: float | None = None, connect_timeout: float = 10.0,
                      reply: bytes = CONNECT_OK, server_speaks_first: bool = False,
                      openings: Openings | None = None) -> Tunnel:
    """Connect to `upstream`, send xapi's 200 reply, forward `initial` (bytes read past the head), pipe.

    The client transport should be paused; raises UpstreamUnavailable (answer 404) before
    anything is written if the VNC server is not there (or, `server_speaks_first`, says
    nothing).
    """
    tunnel = await connect_upstream(upstream, timeout=connect_timeout, idle_timeout=idle_timeout,
                                    server_speaks_first=server_speaks_first, openings=openings)
    if reply and not client.is_closing():
        client.write(reply)
    return splice(client, tunnel, client_initial=initial)
