"""Serve a `TextScreen` over RFB on loopback TCP and/or a Unix socket (the asyncio adapter).

All protocol work happens in `RfbServerConnection`; this module only moves
bytes, applies write backpressure (a client whose socket is full gets the
latest picture once it drains, never a queue of stale ones) and routes keys to
the owner.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Callable

from .errors import ConsoleError
from .keys import KeyTranslator
from .rfb import NEED_DATA, Phase, RfbServerConnection
from .rfb_events import KeyEvent
from .screen import TextScreen

__all__ = ["TextConsoleServer"]

log = logging.getLogger(__name__)

_BACKLOG = 1024     # viewers connecting at once (asyncio's default of 100 overflowed under 500)


class _RfbClientProtocol(asyncio.Protocol):
    def __init__(self, server: "TextConsoleServer") -> None:
        self._server = server
        screen = server.screen
        self.rfb = RfbServerConnection(screen.width, screen.height, name=server.name, version=server.version)
        self._keys = KeyTranslator()
        self.transport: asyncio.Transport | None = None
        self._write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._server._clients.add(self)
        self._flush()

    def data_received(self, data: bytes) -> None:
        try:
            self.rfb.receive_data(data)
            while (event := self.rfb.next_event()) is not NEED_DATA:
                if isinstance(event, KeyEvent):
                    self._server._deliver_key(event, self._keys.feed(event))
            self.push_update()
            self._flush()
        except ConsoleError as exc:
            log.info("console client %s dropped: %s", self._peer(), exc.message)
            self._flush()
            self.transport.close()

    def _peer(self) -> object:
        return self.transport.get_extra_info("peername") if self.transport else None

    def push_update(self) -> None:
        """Answer a pending update request if the socket has room."""
        if self.transport is None or self._write_paused or self.rfb.phase is not Phase.NORMAL:
            return
        screen = self._server.screen
        if self.rfb.update_pending and self.rfb.framebuffer_update(screen.render(), screen.serial):
            self._flush()

    def ring_bell(self) -> None:
        if self.rfb.phase is Phase.NORMAL:
            self.rfb.bell()
            self._flush()

    def _flush(self) -> None:
        out = self.rfb.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self.push_update()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._server._clients.discard(self)
        self.transport = None


class TextConsoleServer:
    """A text console (vncterm-like) served to any number of RFB clients, each in its own pixel format.

    `on_text(text)` receives what key presses type (see `keys.LineEditor` for
    echo and line editing); `on_key(event)` receives every raw KeyEvent.
    """

    def __init__(self, screen: TextScreen | None = None, *, name: str = "console",
                 version: tuple[int, int] = (3, 8),
                 on_text: Callable[[str], None] | None = None,
                 on_key: Callable[[KeyEvent], None] | None = None) -> None:
        self.screen = screen or TextScreen()
        self.name = name
        self.version = version
        self.on_text = on_text
        self.on_key = on_key
        self._clients: set[_RfbClientProtocol] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self.port: int | None = None
        self.path: str | None = None
        RfbServerConnection(1, 1, version=version)  # validate the version now, not per client

    @property
    def client_count(self) -> int:
        return len(self._clients)

    async def start(self, host: str = "127.0.0.1", port: int | None = 0, path: str | None = None) -> None:
        """Listen on host:port (port=None: no TCP) and/or the Unix socket `path`."""
        if self._servers:
            raise RuntimeError("TextConsoleServer already started")
        loop = asyncio.get_running_loop()
        factory = lambda: _RfbClientProtocol(self)  # noqa: E731
        try:
            if port is not None:
                tcp = await loop.create_server(factory, host, port, backlog=_BACKLOG)
                self._servers.append(tcp)
                self.port = tcp.sockets[0].getsockname()[1]
            if path is not None:
                self._servers.append(await loop.create_unix_server(factory, path,
                                                                   backlog=_BACKLOG))
                os.chmod(path, 0o600)       # only the agent's user may reach the screen
                self.path = path
        except BaseException:
            await self.stop()
            raise
        if not self._servers:
            raise ValueError("give a TCP port and/or a Unix socket path")

    def write(self, text: str) -> None:
        """Write text to the screen and update every client waiting for a change."""
        self.screen.write(text)
        self.refresh()

    def refresh(self) -> None:
        """Push the current screen to clients after the owner changed `screen` directly."""
        for client in list(self._clients):
            client.push_update()

    def bell(self) -> None:
        for client in list(self._clients):
            client.ring_bell()

    def _deliver_key(self, event: KeyEvent, text: str | None) -> None:
        try:
            if self.on_key is not None:
                self.on_key(event)
            if text is not None and self.on_text is not None:
                self.on_text(text)
        except Exception:  # the owner's bug must not kill the client connection
            log.exception("console input callback failed")

    async def stop(self) -> None:
        """Stop listening and close every client."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for client in list(self._clients):
            if client.transport is not None:
                client.transport.abort()
        for server in servers:
            await server.wait_closed()
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = None
        await asyncio.sleep(0)  # let connection_lost callbacks run
