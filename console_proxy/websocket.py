"""WebSocket bridge (GET /console for browser viewers such as noVNC) to a VNC server.

Binary frames only; the `binary` subprotocol is answered only when the client
offered it (strict clients reject an unrequested subprotocol, which xapi
gets wrong).  Frame boundaries do not follow RFB messages.  No compression
(browsers always offer permessage-deflate; framebuffer updates are large and
deflating them would cost the agent more than the link saves on a LAN).

Server -> client is the bulk direction (framebuffer updates).  The VNC
server's leg is an asyncio Protocol: each read it delivers (up to 256 KiB)
leaves at once as one binary frame written straight to the client's
transport, without a task wakeup or a copy per read.  When the client's
transport buffers more than its high-water mark, reading from the VNC server
pauses until the client has drained it.  Client -> server goes through
aiohttp's frame reader (`max_msg_size` bounds a frame) and waits for the VNC
server's transport to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from .tunnel import IdleWatch, Openings, Upstream, UpstreamUnavailable, tune_socket

__all__ = ["bridge_websocket"]

log = logging.getLogger(__name__)

_HIGH_WATER = 256 * 1024   # bytes queued on either leg before the other side stops reading

_JOIN_MAX = 16 * 1024       # payloads up to this size are copied behind their header (one send)
_FIN_BINARY = 0x82


def frame_header(length: int) -> bytes:
    """RFC 6455 header of an unmasked, final binary frame carrying `length` bytes."""
    if length < 126:
        return struct.pack("!BB", _FIN_BINARY, length)
    if length < 1 << 16:
        return struct.pack("!BBH", _FIN_BINARY, 126, length)
    return struct.pack("!BBQ", _FIN_BINARY, 127, length)


class _VncLeg(asyncio.Protocol):
    """The VNC server's side of one bridge; what it reads goes out as binary frames."""

    def __init__(self, idle_timeout: float | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.client: asyncio.Transport | None = None   # the WebSocket's transport, once upgraded
        self.ws: web.WebSocketResponse | None = None
        self.idle: IdleWatch | None = None
        self._idle_timeout = idle_timeout
        self._early: list[bytes] = []                  # read before the upgrade finished
        self._stalled = False
        self._wake: asyncio.Future | None = None       # the flow task's wait: stalled or ended
        self._drained: asyncio.Future | None = None    # set while the VNC server's buffer is full
        self.ended = False

    # --- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        tune_socket(transport)
        transport.set_write_buffer_limits(high=_HIGH_WATER)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self._early.append(data)
            self.transport.pause_reading()
            return
        if self.idle is not None:
            self.idle.server_bytes(data)
        if self.ws.closed or client.is_closing():
            return  # closing or gone: no data frame may follow a close frame
        if len(data) <= _JOIN_MAX:
            client.write(frame_header(len(data)) + data)  # one send for a small message
        else:
            client.write(frame_header(len(data)))  # no copy of a large one
            client.write(data)
        if client.get_write_buffer_size() > _HIGH_WATER and not self._stalled:
            self._stalled = True
            self.transport.pause_reading()
            self._wakeup()

    def eof_received(self) -> bool:
        return False  # RFB has no half-close: close, and the WebSocket with it

    def connection_lost(self, exc: BaseException | None) -> None:
        self.ended = True
        self._wakeup()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # --- the bridge's side -----------------------------------------------------------------
    def _wakeup(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def send(self, data: bytes) -> None:
        """Bytes from the client to the VNC server (await `drain` after)."""
        if self.idle is not None:
            self.idle.client_bytes(data)
        if not self.ended:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._drained is not None:
            await self._drained

    def start(self, ws: web.WebSocketResponse, client: asyncio.Transport) -> None:
        """The WebSocket is open: send what the VNC server said so far, then keep reading."""
        self.ws, self.client = ws, client
        if self._idle_timeout:
            self.idle = IdleWatch(self._idle_timeout, self.close)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if not self._stalled and not self.ended:
            self.transport.resume_reading()

    async def flow(self, client_writer: AbstractStreamWriter) -> None:
        """Resume reading once the client has drained; close the WebSocket when the VNC server ends."""
        loop = asyncio.get_running_loop()
        try:
            while not self.ended:
                if self._stalled:
                    await client_writer.drain()  # returns once the client's transport is below its low-water mark
                    self._stalled = False
                    if not self.ended:
                        self.transport.resume_reading()
                    continue
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
        except (ConnectionError, RuntimeError):
            return  # the client is gone; the handler notices too
        await self.ws.close()

    def close(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        if self.transport is not None:
            self.transport.close()


async def _connect(upstream: Upstream, leg: _VncLeg, timeout: float,
                   openings: Openings | None) -> None:
    try:
        await (openings or Openings()).open(upstream, lambda: leg, timeout)
    except UpstreamUnavailable:
        leg.close()
        raise
    leg.transport.pause_reading()  # until the WebSocket is open


async def bridge_websocket(request: web.Request, upstream: Upstream, *, heartbeat: float | None = 30.0,
                           max_msg_size: int = 1 << 20, idle_timeout: float | None = None,
                           connect_timeout: float = 10.0,
                           openings: Openings | None = None) -> web.WebSocketResponse:
    """Upgrade `request` and pipe it to `upstream` until either side closes; call after auth.

    Connects to the VNC server before upgrading, so UpstreamUnavailable can
    still become a 404 (UpstreamBusy: a 503; `openings` gives the turns to open in, see
    `Openings`).  `heartbeat` pings keep reverse proxies from cutting
    idle consoles; `max_msg_size` bounds what one client frame may buffer.
    """
    leg = _VncLeg(idle_timeout)
    await _connect(upstream, leg, connect_timeout, openings)
    ws = web.WebSocketResponse(protocols=("binary",), heartbeat=heartbeat, max_msg_size=max_msg_size,
                               compress=False)
    try:
        client_writer = await ws.prepare(request)
    except BaseException:
        leg.close()
        raise
    client = request.transport
    if client is None:  # the client went away during the upgrade
        leg.close()
        return ws
    client.set_write_buffer_limits(high=_HIGH_WATER)
    leg.start(ws, client)
    flow = asyncio.create_task(leg.flow(client_writer))
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                leg.send(msg.data)
                await leg.drain()
            elif msg.type is WSMsgType.TEXT:
                await ws.close(code=1003, message=b"binary frames only")
                break
    except ConnectionError:
        pass
    finally:
        leg.close()
        flow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flow
        await ws.close()
    return ws
