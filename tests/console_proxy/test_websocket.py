"""The WebSocket bridge with aiohttp's client, with and without the `binary` subprotocol offer."""

from __future__ import annotations

import struct

import aiohttp
import pytest

from console_proxy import TextConsoleServer

from .conftest import Agent


class _WsStream:
    """Reads an exact number of bytes from binary frames whose boundaries need not match RFB messages."""

    def __init__(self, ws):
        self.ws, self.buf = ws, b""

    async def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await self.ws.receive()
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            self.buf += msg.data
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


@pytest.mark.parametrize("offer, answered", [(("binary",), "binary"), ((), None), (("base64",), None)])
async def test_ws_bridge_rfb_handshake(offer, answered):
    console = TextConsoleServer(name="ws")
    await console.start()
    agent = await Agent(("127.0.0.1", console.port)).start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{agent.port}/console?session_id={Agent.SESSION}"
            async with session.ws_connect(url, protocols=offer) as ws:
                assert ws.protocol == answered
                stream = _WsStream(ws)
                assert await stream.read(12) == b"RFB 003.008\n"
                await ws.send_bytes(b"RFB 003.008\n")
                assert await stream.read(2) == b"\x01\x01"
                await ws.send_bytes(b"\x01")
                assert await stream.read(4) == b"\0\0\0\0"
                await ws.send_bytes(b"\x01")
                width, height = struct.unpack(">HH", await stream.read(4))
                await stream.read(16)
                (name_len,) = struct.unpack(">I", await stream.read(4))
                assert (width, height, await stream.read(name_len)) == (480, 275, b"ws")
                await ws.send_bytes(struct.pack(">BBHHHH", 3, 0, 0, 0, 6, 11))
                assert len(await stream.read(4 + 12 + 6 * 11 * 4)) == 4 + 12 + 264
            async with session.get(f"http://127.0.0.1:{agent.port}/console") as resp:
                assert resp.status == 401
    finally:
        await agent.stop()
        await console.stop()


async def test_ws_upstream_missing_is_404():
    agent = await Agent("/nonexistent/vnc.sock").start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{agent.port}/console?session_id={Agent.SESSION}"
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(url)
            assert info.value.status == 404
    finally:
        await agent.stop()
