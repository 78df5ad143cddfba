"""The WebSocket bridge with aiohttp's client, with and without the `binary` subprotocol offer."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

import aiohttp
import numpy as np
import pytest

from console_proxy import TextConsoleServer

from .conftest import Agent, eventually


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


@contextlib.asynccontextmanager
async def _text_console_agent():
    """An agent bridging to a text console server; yields the WebSocket URL with a good session."""
    console = TextConsoleServer(name="ws")
    await console.start()
    agent = await Agent(("127.0.0.1", console.port)).start()
    try:
        yield f"http://127.0.0.1:{agent.port}/console?session_id={Agent.SESSION}"
    finally:
        await agent.stop()
        await console.stop()


@pytest.mark.parametrize("offer, answered", [(("binary",), "binary"), ((), None), (("base64",), None)])
async def test_ws_bridge_rfb_handshake(offer, answered):
    async with _text_console_agent() as url, aiohttp.ClientSession() as session:
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
        async with session.get(url.partition("?")[0]) as resp:
            assert resp.status == 401


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


_UPGRADE = (b"GET /console?session_id=" + Agent.SESSION.encode() + b" HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(first header byte, payload) of one unmasked server frame."""
    first, second = await reader.readexactly(2)
    assert not second & 0x80, "a server frame is never masked"
    length = second & 0x7F
    if length >= 126:
        length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
    return first, await reader.readexactly(length)


async def test_ws_bulk_backpressure_order_and_close(tmp_path):
    """A client that does not read stops the bridge reading from the VNC server; every byte then
    arrives in order in bounded binary frames, and the server's close follows them as a close frame.
    (Unix-socket upstream and a small client receive buffer: no TCP autotuning to absorb the bulk.)"""
    payload = np.random.default_rng(6).integers(0, 256, 32 << 20, dtype=np.uint8).tobytes()
    queued: list[asyncio.Transport] = []

    async def vnc_server(reader, writer):
        writer.write(payload)
        queued.append(writer.transport)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    path = str(tmp_path / "vnc.sock")
    server = await asyncio.start_unix_server(vnc_server, path)
    agent = await Agent(path).start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", agent.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(_UPGRADE)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        await eventually(lambda: queued)
        await asyncio.sleep(0.5)  # the client reads nothing meanwhile
        # socket buffers and the bridge's bounded queue hold a few MiB at most
        assert queued[0].get_write_buffer_size() > 20 << 20
        got = bytearray()
        while True:
            first, data = await _read_frame(reader)
            if first != 0x82:
                break
            assert 0 < len(data) <= 1 << 20
            got += data
        assert (first, data[:2]) == (0x88, (1000).to_bytes(2, "big"))  # close, normal
        assert got == payload
        writer.close()
    finally:
        sock.close()
        await agent.stop()
        server.close()
        await server.wait_closed()


async def test_ws_no_compression_and_text_refused():
    async with _text_console_agent() as url, aiohttp.ClientSession() as session:
        async with session.ws_connect(url, compress=15) as ws:  # a browser always offers deflate
            assert ws.compress == 0
            assert (await ws.receive_bytes())[:12] == b"RFB 003.008\n"
            await ws.send_str("RFB 003.008\n")
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1003
