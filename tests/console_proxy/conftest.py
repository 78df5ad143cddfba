"""Shared helpers: a vncdotool session fixture (one Twisted reactor per process) and RFB handshakes."""

from __future__ import annotations

import asyncio
import io
import struct

import numpy as np
import pytest


@pytest.fixture(scope="session")
def vnc_api():
    """vncdotool's threaded API; its reactor can run only once, so stop it at session end."""
    from vncdotool import api

    yield api
    api.shutdown()


async def vnc_capture(client, *, incremental: bool = False) -> np.ndarray:
    """Capture the screen through a blocking vncdotool client without blocking our loop."""
    from PIL import Image

    buf = io.BytesIO()
    await asyncio.to_thread(client.captureScreen, buf, incremental=incremental, format="png")
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


async def vnc_type(client, text: str) -> None:
    for ch in text:
        await asyncio.to_thread(client.keyPress, {"\r": "enter"}.get(ch, ch))


async def rfb_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        version: bytes = b"RFB 003.008\n") -> tuple[bytes, int, int, bytes, bytes]:
    """Client side of a security-None handshake; returns (server version, w, h, pixel format, name)."""
    server_version = await reader.readexactly(12)
    writer.write(version)
    if version == b"RFB 003.003\n":
        assert struct.unpack(">I", await reader.readexactly(4)) == (1,)
    else:
        count = (await reader.readexactly(1))[0]
        assert 1 in await reader.readexactly(count)
        writer.write(b"\x01")
        if version == b"RFB 003.008\n":
            assert await reader.readexactly(4) == b"\0\0\0\0"
    writer.write(b"\x01")  # ClientInit, shared
    width, height = struct.unpack(">HH", await reader.readexactly(4))
    pixel_format = await reader.readexactly(16)
    (name_len,) = struct.unpack(">I", await reader.readexactly(4))
    name = await reader.readexactly(name_len)
    return server_version, width, height, pixel_format, name


async def read_update(reader: asyncio.StreamReader, bytes_per_pixel: int) -> list[tuple[int, int, int, int, bytes]]:
    """Read one FramebufferUpdate of Raw rectangles."""
    head = await reader.readexactly(4)
    assert head[0] == 0, head
    (count,) = struct.unpack(">H", head[2:])
    rects = []
    for _ in range(count):
        x, y, w, h, enc = struct.unpack(">HHHHi", await reader.readexactly(12))
        assert enc == 0
        rects.append((x, y, w, h, await reader.readexactly(w * h * bytes_per_pixel)))
    return rects


def update_request(incremental: bool, x: int, y: int, w: int, h: int) -> bytes:
    return struct.pack(">BBHHHH", 3, int(incremental), x, y, w, h)


async def eventually(predicate, timeout: float = 10.0) -> None:
    """Wait until predicate() is true (input sent by another thread arrives asynchronously)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class Agent:
    """A tiny daemon stand-in: aiohttp app + ConnectFrontEnd, authorising `session_id=good`."""

    SESSION = "OpaqueRef:good"

    def __init__(self, upstream, *, head_timeout: float = 10.0, idle_timeout: float | None = None,
                 **front_end_options) -> None:
        from aiohttp import web

        from console_proxy import ConnectFrontEnd, UpstreamUnavailable, bridge_websocket

        self.upstream = upstream
        self.app = web.Application()
        self.connects: list = []

        async def hello(request):
            return web.Response(text="hello")

        async def echo(request):
            return web.Response(body=await request.read())

        async def console_ws(request):
            if request.query.get("session_id") != self.SESSION:
                raise web.HTTPUnauthorized()
            try:
                return await bridge_websocket(request, self.upstream, heartbeat=5.0)
            except UpstreamUnavailable:
                raise web.HTTPNotFound()

        async def on_connect(client):
            self.connects.append(client.head)
            if client.head.path != "/console":
                client.reject(404)
                return
            session = client.head.cookies.get("session_id") or client.head.query.get("session_id")
            if session != self.SESSION:
                client.reject(401, realm="xapi")
                return
            try:
                await client.tunnel(self.upstream, idle_timeout=idle_timeout)
            except UpstreamUnavailable:
                client.reject(404, message="no console server running")

        self.app.router.add_get("/hello", hello)
        self.app.router.add_post("/echo", echo)
        self.app.router.add_get("/console", console_ws)
        self.front_end = ConnectFrontEnd(on_connect, head_timeout=head_timeout,
                                         **front_end_options)
        self.runner = web.AppRunner(self.app)

    async def start(self, *, ssl_context=None, unix_path: str | None = None) -> "Agent":
        from console_proxy import Listeners

        await self.runner.setup()
        self.listeners = Listeners(self.runner, self.front_end)
        _, self.port = await self.listeners.tcp("127.0.0.1", 0, ssl=ssl_context)
        if unix_path is not None:
            await self.listeners.unix(unix_path)
        return self

    async def stop(self) -> None:
        self.listeners.close()
        await self.front_end.shutdown()
        await self.runner.cleanup()


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")
