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
