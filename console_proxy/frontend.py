"""Connection front end for the daemon's listeners: `CONNECT /console?...` vs everything else.

aiohttp's parser rejects `CONNECT /path` (it wants host:port), so each new
connection first talks to `_SniffProtocol`.  As soon as the first bytes cannot
be `CONNECT `, the connection is handed, bytes replayed, to aiohttp's own
protocol from the runner's server factory — aiohttp then sees an ordinary
connection (TCP, TLS or Unix; TLS is already decrypted by the transport).  A
CONNECT head is read under xapi's limits (1024 bytes, 10 s), parsed and given
to the daemon's async callback as a `ConnectClient`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from ssl import SSLContext
from typing import Awaitable, Callable

from aiohttp import web
from multidict import MultiDictProxy
from yarl import URL

from .tunnel import Tunnel, Upstream, open_tunnel, reply_error, tune_socket

__all__ = [
    "ConnectHead",
    "ConnectClient",
    "ConnectHandler",
    "ConnectFrontEnd",
    "Listeners",
    "HEAD_LIMIT",
    "HEAD_TIMEOUT",
]

log = logging.getLogger(__name__)

HEAD_LIMIT = 1024     # xapi's limit on a request head
HEAD_TIMEOUT = 10.0   # and on the time to send it
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
                     connect_timeout: float = 10.0) -> Tunnel:
        """Connect to the VNC server, answer 200 and pipe; UpstreamUnavailable if it is not there
        (then call `reject(404)`).  The returned Tunnel is also closed by `front_end.shutdown()`."""
        if self.answered:
            raise RuntimeError("this CONNECT has already been answered")
        if self.closed:
            raise ConnectionResetError("console client went away before the tunnel opened")
        tunnel = await open_tunnel(self.transport, upstream, initial=self.head.leftover + bytes(self._extra),
                                   idle_timeout=idle_timeout, connect_timeout=connect_timeout)
        self._answer()
        self._front_end._track_tunnel(tunnel)
        return tunnel

    def _answer(self) -> None:
        if self.answered:
            raise RuntimeError("this CONNECT has already been answered")
        self.answered = True


ConnectHandler = Callable[[ConnectClient], Awaitable[None]]


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
        self._front_end._sniffing.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._front_end.head_timeout, self._head_timeout)

    def _stop_sniffing(self) -> None:
        self._front_end._sniffing.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        self._fail(408, "request head not received in time")

    def _fail(self, status: int, message: str) -> None:
        self._stop_sniffing()
        log.info("console front end: %s from %s -> %d", message, self._peer(), status)
        reply_error(self.transport, status, message=message)

    def _peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def data_received(self, data: bytes) -> None:
        if self._client is not None:  # head already handed to the daemon; keep what follows
            self._client._extra += data
            return
        self._buf += data
        prefix = bytes(self._buf[:len(_METHOD)])
        if not _METHOD.startswith(prefix):
            self._hand_to_http()
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

    def _hand_to_http(self) -> None:
        self._stop_sniffing()
        protocol = self._http_factory()
        transport, replay = self.transport, bytes(self._buf)
        self.transport, self._buf = None, bytearray()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if replay:
            protocol.data_received(replay)

    def eof_received(self) -> bool:
        if self._client is not None:
            return True  # half-closed after the head: the daemon may still answer
        if self._buf and self._timer is not None:
            self._fail(400, "connection closed in the middle of the request head")
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
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        self.on_connect = on_connect
        self.head_limit = head_limit
        self.head_timeout = head_timeout
        self._sniffing: set[_SniffProtocol] = set()
        self._tasks: set[asyncio.Task] = set()
        self.tunnels: set[Tunnel] = set()

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
        self._servers: list[asyncio.AbstractServer] = []

    async def tcp(self, host: str | None, port: int, *, ssl: SSLContext | None = None,
                  backlog: int = 128) -> tuple[str, int]:
        """Listen on `host:port` (0: an ephemeral port); returns the address bound."""
        server = await asyncio.get_running_loop().create_server(
            self._factory, host, port, ssl=ssl, backlog=backlog, reuse_address=True)
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    async def unix(self, path: str, *, backlog: int = 128) -> str:
        server = await asyncio.get_running_loop().create_unix_server(
            self._factory, path, backlog=backlog)
        self._servers.append(server)
        return path

    def close(self) -> None:
        while self._servers:
            self._servers.pop().close()

    async def __aenter__(self) -> "Listeners":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
