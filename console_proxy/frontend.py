"""Connection front end for the daemon's listeners: `CONNECT /console?...` vs everything else.

aiohttp's parser rejects `CONNECT /path` (it wants host:port), so each new connection first
talks to `_SniffProtocol`.  A CONNECT head is read under xapi's limits (1024 bytes, 10 s),
parsed and given to the daemon's async callback as a `ConnectClient`.  Any other request's
head is read whole here too, under its own limits (64 KiB, 8 KiB a line, 10 s: aiohttp has no
timeout for a head), then the connection is handed, bytes replayed, to aiohttp's own protocol
from the runner's server factory — aiohttp then sees an ordinary connection (TCP, TLS or Unix;
TLS is already decrypted by the transport).

What else the front end bounds, so that no flood of connections starves the others:
- heads still being read: at most `max_pending` at once; a new connection past that closes
  the one that has been sending its head longest (a client that means it sends a head in
  milliseconds; a slow-head flood mostly evicts itself);
- connections in all: past `max_connections` a new one gets a 503 and is closed at once;
- every refusal is one log line, at most one a second per kind, with how many it stood for.

An upload whose head says neither Content-Length nor chunked (HTTP/1.0, or an HTTP/1.1 client
that half-closes) on a path `until_close(method, path)` accepts has a body that runs until the
client shuts its side: the front end hands aiohttp that body as chunks and the end of the
stream as the last chunk, and keeps its side open for the answer.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from ssl import SSLContext
from typing import Awaitable, Callable

from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from .tunnel import Openings, Tunnel, Upstream, open_tunnel, reply_error, tune_socket

__all__ = [
    "ConnectHead",
    "ConnectClient",
    "ConnectHandler",
    "ConnectFrontEnd",
    "Listeners",
    "HEAD_LIMIT",
    "HEAD_TIMEOUT",
    "HTTP_HEAD_LIMIT",
    "HTTP_LINE_LIMIT",
    "FRAMING",
    "FRAMED_BY_CLOSE",
]

log = logging.getLogger(__name__)

HEAD_LIMIT = 1024     # xapi's limit on a request head
HEAD_TIMEOUT = 10.0   # and on the time to send it
HTTP_HEAD_LIMIT = 65536    # any other request's head
HTTP_LINE_LIMIT = 8190     # and one line of it (aiohttp's own limit, refused here in one line)
MAX_PENDING = 512          # heads being read at once
QUEUE = 1024               # the kernel's queue of connections not yet accepted
PER_TURN = 8               # connections accepted per turn of the event loop
FRAMING, FRAMED_BY_CLOSE = "X-Body-Framing", "connection-close"   # said to the handler
_METHOD = b"CONNECT "
_REQUEST_LINE = re.compile(r"CONNECT (\S+) HTTP/(1\.[01])")
_HEADER = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")


@dataclass(frozen=True)
class ConnectHead:
    """A parsed `CONNECT <target> HTTP/1.x` head; `leftover` is what the client sent after it."""

    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    leftover: bytes = b""
    url: URL = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.target.startswith("/"):
            raise ValueError(f"CONNECT target {self.target!r} is not a path")
        path, _, query = self.target.partition("?")  # never let "//host/..." parse as an authority
        object.__setattr__(self, "url", URL.build(path=path, query_string=query, encoded=True))

    @property
    def method(self) -> str:
        return "CONNECT"

    @property
    def path(self) -> str:
        return self.url.path

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.url.query

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), None)

    @property
    def cookies(self) -> dict[str, str]:
        jar: SimpleCookie = SimpleCookie()
        for key, value in self.headers:
            if key.lower() == "cookie":
                try:
                    jar.load(value)
                except CookieError:
                    continue
        return {name: morsel.value for name, morsel in jar.items()}


def parse_connect_head(raw: bytes, leftover: bytes = b"") -> ConnectHead:
    """Parse a complete head (ending in CRLF CRLF); ValueError on anything malformed."""
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes everything
        raise ValueError(str(exc)) from None
    lines = text[:-4].split("\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ValueError(f"bad request line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        header = _HEADER.fullmatch(line)
        if header is None or any(ord(c) < 32 and c != "\t" for c in line):
            raise ValueError(f"bad header line {line[:80]!r}")
        headers.append((header[1], header[2]))
    return ConnectHead(match[1], match[2], tuple(headers), leftover)


class ConnectClient:
    """A client whose CONNECT head was read; the daemon answers it with `reject` or `tunnel`.

    The transport's reading is paused until then; bytes that still arrive are
    kept and forwarded once the tunnel starts.
    """

    def __init__(self, head: ConnectHead, transport: asyncio.Transport, front_end: "ConnectFrontEnd") -> None:
        self.head = head
        self.transport = transport
        self._front_end = front_end
        self._extra = bytearray()
        self.answered = False
        self.closed = False

    @property
    def peername(self):
        return self.transport.get_extra_info("peername")

    def reject(self, status: int, *, message: str | None = None, realm: str | None = None,
               location: str | None = None) -> None:
        """Send an error (401 with WWW-Authenticate, 403, 404, 500, 503, 302 with Location) and close."""
        self._answer()
        reply_error(self.transport, status, message=message, realm=realm, location=location)

    async def tunnel(self, upstream: Upstream, *, idle_timeout: float | None = None,
                     connect_timeout: float = 10.0, server_speaks_first: bool = False) -> Tunnel:
        """Connect to the VNC server, answer 200 and pipe; UpstreamUnavailable if it is not there
        (then call `reject(404)`).  The returned Tunnel is also closed by `front_end.shutdown()`."""
        if self.answered:
            raise RuntimeError("this CONNECT has already been answered")
        if self.closed:
            raise ConnectionResetError("console client went away before the tunnel opened")
        tunnel = await open_tunnel(self.transport, upstream,
                                   initial=self.head.leftover + bytes(self._extra),
                                   idle_timeout=idle_timeout, connect_timeout=connect_timeout,
                                   server_speaks_first=server_speaks_first,
                                   openings=self._front_end.openings)
        self._answer()
        self._front_end._track_tunnel(tunnel)
        return tunnel

    def _answer(self) -> None:
        if self.answered:
            raise RuntimeError("this CONNECT has already been answered")
        self.answered = True


ConnectHandler = Callable[[ConnectClient], Awaitable[None]]


class RefusalLog:
    """One log line per kind of refusal and second at most, saying how many it stands for."""

    def __init__(self, logger: logging.Logger, interval: float = 1.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def refused(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        self.logger.warning(message + (" (and %d more like it)" if held else ""),
                            *args, *((held,) if held else ()))


class _UntilClose(asyncio.Protocol):
    """Between the transport and aiohttp for a body framed by the connection's end: what the
    client sends goes on as chunks, its end as the last chunk; our side stays open. A client
    that sends no byte of body for `quiet` seconds (an HTTP/1.1 PUT with no body and no
    length, whose sender waits for the answer) has sent an empty body: it ends there, so the
    handler answers instead of both sides waiting forever."""

    def __init__(self, inner: asyncio.Protocol, quiet: float) -> None:
        self.inner = inner
        self.ended = False
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            quiet, self._end)

    def _end(self) -> None:
        self._timer = None
        if not self.ended:
            self.ended = True
            self.inner.data_received(b"0\r\n\r\n")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if data and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if data and not self.ended:
            self.inner.data_received(b"%x\r\n" % len(data))
            self.inner.data_received(data)
            self.inner.data_received(b"\r\n")

    def eof_received(self) -> bool:
        if self._timer is not None:
            self._timer.cancel()
        self._end()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def _framed_by_close(head: bytes, until_close: Callable[[str, str], bool] | None
                     ) -> bytes | None:
    """The head rewritten for chunks (HTTP/1.1, chunked, Connection: close) when its body runs
    until the client's end; None when the head frames its body itself or has none."""
    if until_close is None:
        return None
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] not in (b"PUT", b"POST"):
        return None
    names = {line.split(b":", 1)[0].strip().lower() for line in lines[1:]}
    if b"content-length" in names or b"transfer-encoding" in names:
        return None
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    if not until_close(method, target.partition("?")[0]):
        return None
    kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower()
            != b"connection"]
    host = [] if b"host" in names else [b"Host: localhost"]    # HTTP/1.0 needs none
    return b"\r\n".join([b" ".join((parts[0], parts[1], b"HTTP/1.1")), *kept, *host,
                          b"Transfer-Encoding: chunked", b"Connection: close",
                          b"%s: %s" % (FRAMING.encode(), FRAMED_BY_CLOSE.encode())]) + b"\r\n\r\n"


class _SniffProtocol(asyncio.Protocol):
    """Reads just enough of a new connection to route it; see the module docstring."""

    def __init__(self, front_end: "ConnectFrontEnd", http_factory: Callable[[], asyncio.Protocol]) -> None:
        self._front_end = front_end
        self._http_factory = http_factory
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._client: ConnectClient | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        front = self._front_end
        if front.connections() >= front.max_connections:
            self._timer = None
            front.refusals.refused("full", "refusing a connection from %s: %d connections "
                                   "open (the limit)", self._peer(), front.max_connections)
            reply_error(self.transport, 503, message="too many connections")
            self.transport = None
            return
        if len(front._sniffing) >= front.max_pending:
            oldest = next(iter(front._sniffing))
            oldest._fail(408, "request head not received in time (evicted by newer "
                              "connections)", kind="evicted")
        front._sniffing[self] = None
        self._timer = asyncio.get_running_loop().call_later(front.head_timeout, self._head_timeout)

    def _stop_sniffing(self) -> None:
        self._front_end._sniffing.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        self._fail(408, "request head not received in time", kind="timeout")

    def _fail(self, status: int, message: str, kind: str = "bad head") -> None:
        self._stop_sniffing()
        self._front_end.refusals.refused(kind, "front end: %s from %s -> %d", message,
                                         self._peer(), status)
        if self.transport is not None:
            reply_error(self.transport, status, message=message)

    def _peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def data_received(self, data: bytes) -> None:
        if self._client is not None:  # head already handed to the daemon; keep what follows
            self._client._extra += data
            return
        if self.transport is None:    # refused already
            return
        self._buf += data
        prefix = bytes(self._buf[:len(_METHOD)])
        if not _METHOD.startswith(prefix):
            self._http_head(len(data))
            return
        end = self._buf.find(b"\r\n\r\n", 0, self._front_end.head_limit + 4)
        if end < 0 or end + 4 > self._front_end.head_limit:
            if len(self._buf) > self._front_end.head_limit:
                self._fail(431, f"request head exceeds {self._front_end.head_limit} bytes")
            return
        raw, leftover = bytes(self._buf[:end + 4]), bytes(self._buf[end + 4:])
        try:
            head = parse_connect_head(raw, leftover)
        except ValueError as exc:
            self._fail(400, f"malformed CONNECT request: {exc}")
            return
        self._stop_sniffing()
        self.transport.pause_reading()
        tune_socket(self.transport)
        self._client = ConnectClient(head, self.transport, self._front_end)
        self._front_end._dispatch(self._client)

    def _http_head(self, new: int) -> None:
        """An HTTP request: hand it on once its head is whole (and within the limits)."""
        buf = self._buf
        if buf[:1] == b"\x16":         # a TLS handshake on a plain port: aiohttp says so at once
            self._hand_to_http()
            return
        end = buf.find(b"\r\n\r\n", max(0, len(buf) - new - 3))
        if end < 0 and len(buf) <= HTTP_HEAD_LIMIT:
            if buf.rfind(b"\n") < len(buf) - HTTP_LINE_LIMIT:
                self._fail(431, f"a request head line exceeds {HTTP_LINE_LIMIT} bytes")
            return
        if end < 0 or end + 4 > HTTP_HEAD_LIMIT:
            self._fail(431, f"request head exceeds {HTTP_HEAD_LIMIT} bytes")
            return
        head = bytes(buf[:end + 4])
        if any(len(line) > HTTP_LINE_LIMIT for line in head.split(b"\r\n")):
            self._fail(431, f"a request head line exceeds {HTTP_LINE_LIMIT} bytes")
            return
        rewritten = _framed_by_close(head, self._front_end.until_close)
        if rewritten is None:
            self._hand_to_http()
        else:
            self._buf = bytearray(rewritten) + buf[end + 4:]
            self._hand_to_http(until_close=True)

    def _hand_to_http(self, *, until_close: bool = False) -> None:
        self._stop_sniffing()
        protocol = self._http_factory()
        transport, replay = self.transport, bytes(self._buf)
        self.transport, self._buf = None, bytearray()
        if until_close:
            head_end = replay.index(b"\r\n\r\n") + 4
            shim = _UntilClose(protocol, self._front_end.head_timeout)
            transport.set_protocol(shim)
            protocol.connection_made(transport)
            protocol.data_received(replay[:head_end])
            shim.data_received(replay[head_end:])
            return
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if replay:
            protocol.data_received(replay)

    def eof_received(self) -> bool:
        if self._client is not None:
            return True  # half-closed after the head: the daemon may still answer
        if self._buf and self._timer is not None:
            self._fail(400, "connection closed in the middle of the request head",
                       kind="cut head")
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_sniffing()
        if self._client is not None:
            self._client.closed = True
        self.transport = None


class ConnectFrontEnd:
    """Routes CONNECT to `on_connect` and everything else to aiohttp; one per daemon, shared by sites.

    `on_connect(client)` must end by calling `client.reject(...)` or `await
    client.tunnel(...)`; if it raises or returns without answering, the client
    gets a 500.
    """

    def __init__(self, on_connect: ConnectHandler, *, head_limit: int = HEAD_LIMIT,
                 head_timeout: float = HEAD_TIMEOUT, max_pending: int = MAX_PENDING,
                 max_connections: int = 1 << 30,
                 until_close: Callable[[str, str], bool] | None = None) -> None:
        self.on_connect = on_connect
        self.head_limit = head_limit
        self.head_timeout = head_timeout
        self.max_pending = max_pending
        self.max_connections = max_connections
        self.until_close = until_close
        self.refusals = RefusalLog(log)
        self.http_connections: Callable[[], int] = lambda: 0   # set by Listeners
        self._sniffing: dict[_SniffProtocol, None] = {}     # oldest first
        self._tasks: set[asyncio.Task] = set()
        self.tunnels: set[Tunnel] = set()
        self.openings = Openings()   # tunnels are opened in turns (WebSocket bridges too)

    def protocol_factory(self, http_factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (`runner.server`) for `loop.create_server`."""
        return lambda: _SniffProtocol(self, http_factory)

    def _dispatch(self, client: ConnectClient) -> None:
        task = asyncio.get_running_loop().create_task(self._run(client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, client: ConnectClient) -> None:
        try:
            await self.on_connect(client)
        except asyncio.CancelledError:
            if not client.answered:
                client.transport.abort()
            raise
        except ConnectionResetError as exc:  # the client left while it was being authorised
            log.info("CONNECT %s: %s", client.head.target, exc)
            return
        except Exception:
            log.exception("CONNECT %s handler failed", client.head.target)
            if not client.answered:
                client.reject(500, message="internal error")
            return
        if not client.answered:
            log.error("CONNECT %s handler returned without answering", client.head.target)
            client.reject(500, message="internal error")

    def _track_tunnel(self, tunnel: Tunnel) -> None:
        self.tunnels.add(tunnel)
        tunnel.add_done_callback(self.tunnels.discard)

    def connections(self) -> int:
        """Every connection the listeners hold now: heads, CONNECTs, tunnels and HTTP."""
        return self.active + self.http_connections()

    @property
    def active(self) -> int:
        """Connections still being sniffed, handlers running and tunnels open (for tests/metrics)."""
        return len(self._sniffing) + len(self._tasks) + len(self.tunnels)

    async def shutdown(self) -> None:
        """Close half-read connections, cancel running handlers, close every tunnel (on_shutdown)."""
        for sniffer in list(self._sniffing):
            sniffer._stop_sniffing()
            if sniffer.transport is not None:
                sniffer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for tunnel in list(self.tunnels):
            tunnel.close("agent shutting down")
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(t.wait_closed() for t in list(self.tunnels)))


class Listeners:
    """Listening sockets whose connections meet a `ConnectFrontEnd` before an aiohttp runner.

    Public API only: `runner.server` is aiohttp's protocol factory (what its sites serve); these
    are `loop.create_server` / `create_unix_server` servers wrapping it, owned here.  `close()`
    stops listening; do it before `runner.cleanup()`, which then closes the connections, as it
    stops its own sites first.  Also an async context manager.
    """

    def __init__(self, runner: web.BaseRunner, front_end: ConnectFrontEnd) -> None:
        if runner.server is None:
            raise RuntimeError("call runner.setup() first")
        self._factory = front_end.protocol_factory(runner.server)
        server = runner.server
        front_end.http_connections = lambda: len(getattr(server, "connections", ()))
        self._servers: list[asyncio.AbstractServer] = []

    async def tcp(self, host: str | None, port: int, *, ssl: SSLContext | None = None,
                  backlog: int = QUEUE, per_turn: int = PER_TURN) -> tuple[str, int]:
        """Listen on `host:port` (0: an ephemeral port); returns the address bound."""
        server = await asyncio.get_running_loop().create_server(
            self._factory, host, port, ssl=ssl, backlog=per_turn, reuse_address=True)
        return self._keep(server, backlog).sockets[0].getsockname()[:2]

    async def unix(self, path: str, *, backlog: int = QUEUE, per_turn: int = PER_TURN) -> str:
        server = await asyncio.get_running_loop().create_unix_server(
            self._factory, path, backlog=per_turn)
        self._keep(server, backlog)
        return path

    def _keep(self, server: asyncio.AbstractServer, queue: int) -> asyncio.AbstractServer:
        """asyncio takes one number for the kernel's listen queue and for how many connections
        one turn of the loop accepts. A long queue keeps a burst of connects from being
        dropped (a dropped SYN costs the client a second), a short turn keeps a burst from
        holding the loop (every accepted connection is set up in that turn): listen() again
        with the long queue, asyncio keeps its short turn."""
        for sock in server.sockets:
            raw = socket.socket(fileno=sock.fileno())
            try:
                raw.listen(queue)
            finally:
                raw.detach()
        self._servers.append(server)
        return server

    def close(self) -> None:
        while self._servers:
            self._servers.pop().close()

    async def __aenter__(self) -> "Listeners":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
