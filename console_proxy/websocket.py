"""WebSocket bridge (GET /console for browser viewers such as noVNC) to a VNC server.

Binary frames only; the `binary` subprotocol is answered only when the client
offered it (strict clients reject an unrequested subprotocol, which xapi
gets wrong).  Frame boundaries do not follow RFB messages.  Backpressure:
each direction awaits the other side's drain before reading more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from .tunnel import IdleWatch, Upstream, UpstreamUnavailable, tune_socket

__all__ = ["bridge_websocket", "open_upstream_stream"]

log = logging.getLogger(__name__)

_READ_SIZE = 256 * 1024


async def open_upstream_stream(upstream: Upstream, *, timeout: float = 10.0):
    """(reader, writer) to the VNC server; UpstreamUnavailable (answer 404) if it is not there."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(upstream, str):
                reader, writer = await asyncio.open_unix_connection(upstream, limit=_READ_SIZE)
            else:
                reader, writer = await asyncio.open_connection(*upstream, limit=_READ_SIZE)
    except (OSError, TimeoutError) as exc:
        raise UpstreamUnavailable(f"console server {upstream!r} is not reachable: {exc}") from exc
    tune_socket(writer.transport)
    return reader, writer


async def bridge_websocket(request: web.Request, upstream: Upstream, *, heartbeat: float | None = 30.0,
                           max_msg_size: int = 1 << 20, idle_timeout: float | None = None,
                           connect_timeout: float = 10.0) -> web.WebSocketResponse:
    """Upgrade `request` and pipe it to `upstream` until either side closes; call after auth.

    Connects to the VNC server before upgrading, so UpstreamUnavailable can
    still become a 404.  `heartbeat` pings keep reverse proxies from cutting
    idle consoles; `max_msg_size` bounds what one client frame may buffer.
    """
    reader, writer = await open_upstream_stream(upstream, timeout=connect_timeout)
    ws = web.WebSocketResponse(protocols=("binary",), heartbeat=heartbeat, max_msg_size=max_msg_size)
    try:
        await ws.prepare(request)
    except BaseException:
        writer.close()
        raise
    # Idle: closing the upstream ends the pump, which closes the WebSocket.
    idle = IdleWatch(idle_timeout, writer.close) if idle_timeout else None

    async def upstream_to_client() -> None:
        try:
            while data := await reader.read(_READ_SIZE):
                if idle is not None:
                    idle.server_bytes(data)
                await ws.send_bytes(data)
        except (ConnectionError, RuntimeError):
            pass  # the client is gone; the other direction notices too
        finally:
            await ws.close()

    pump = asyncio.create_task(upstream_to_client())
    try:
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                if idle is not None:
                    idle.client_bytes(msg.data)
                writer.write(msg.data)
                await writer.drain()
            elif msg.type is WSMsgType.TEXT:
                await ws.close(code=1003, message=b"binary frames only")
                break
    except ConnectionError:
        pass
    finally:
        if idle is not None:
            idle.cancel()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        writer.close()
        await ws.close()
    return ws
