"""TextConsoleServer against vncdotool (a real RFB client) and a raw-socket client."""

from __future__ import annotations

import asyncio
import struct

import numpy as np
import pytest

from console_proxy.keys import LineEditor
from console_proxy.pixels import encode_pixels
from console_proxy.rfb_events import PixelFormat
from console_proxy.server import TextConsoleServer

from .conftest import eventually, rfb_handshake, read_update, update_request, vnc_capture, vnc_type


def _login_console(version=(3, 8)) -> tuple[TextConsoleServer, list[str]]:
    lines: list[str] = []
    server = TextConsoleServer(name="vm-console", version=version)

    def on_line(line: str) -> None:
        lines.append(line)
        server.write(f"Welcome, {line}\n# " if len(lines) == 1 else "# ")

    server.on_text = LineEditor(server.write, on_line).feed
    server.write("Debian GNU/Linux\nlogin: ")
    return server, lines


@pytest.mark.parametrize("version", [(3, 3), (3, 7), (3, 8)])
async def test_vncdotool_sees_and_types(vnc_api, version):
    server, lines = _login_console(version)
    await server.start()
    try:
        client = await asyncio.to_thread(vnc_api.connect, f"127.0.0.1::{server.port}", timeout=20)
        try:
            first = await vnc_capture(client)
            np.testing.assert_array_equal(first, server.screen.render())
            await vnc_type(client, "root\r")
            await eventually(lambda: lines == ["root"])
            after = await vnc_capture(client, incremental=True)
            assert server.screen.text()[:3] == ["Debian GNU/Linux", "login: root", "Welcome, root"]
            np.testing.assert_array_equal(after, server.screen.render())
            assert not np.array_equal(first, after)
        finally:
            await asyncio.to_thread(client.disconnect)
    finally:
        await server.stop()


async def test_raw_client_16bpp_big_endian_pixels():
    server = TextConsoleServer(name="raw")
    server.write("X")
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        version, width, height, pf, name = await rfb_handshake(reader, writer)
        assert (version, name) == (b"RFB 003.008\n", b"raw")
        assert (width, height) == (server.screen.width, server.screen.height)
        rgb565_be = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
        writer.write(b"\0\0\0\0" + rgb565_be.pack())
        writer.write(struct.pack(">BxH4i", 2, 4, 0, -223, -239, -308))  # with pseudo-encodings
        writer.write(update_request(False, 0, 0, 12, 11))
        [(x, y, w, h, data)] = await read_update(reader, 2)
        assert (x, y, w, h) == (0, 0, 12, 11)
        pixels = np.frombuffer(data, dtype=">u2").reshape(11, 12)
        frame = server.screen.render()[:11, :12]
        fg = (round(224 * 31 / 255) << 11) | (round(224 * 63 / 255) << 5) | round(224 * 31 / 255)
        expected = np.where(frame[..., 0] > 0, fg, 0)  # foreground grey 224, background black
        np.testing.assert_array_equal(pixels, expected)
        assert pixels[:, :6].any() and (pixels[:9, 6:] == 0).all()  # 'X', then the blank cursor cell
    finally:
        writer.close()
        await server.stop()


async def test_incremental_request_waits_for_change_and_stop_closes_clients():
    server = TextConsoleServer()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await rfb_handshake(reader, writer, b"RFB 003.003\n")
        writer.write(update_request(False, 0, 0, 0xFFFF, 0xFFFF))
        [(_, _, w, h, _)] = await read_update(reader, 4)
        assert (w, h) == (server.screen.width, server.screen.height)
        # Nothing changed, so an incremental request is held: the next update to arrive
        # answers the non-incremental 1x1 request sent after it.
        writer.write(update_request(True, 0, 0, 0xFFFF, 0xFFFF) + update_request(False, 0, 0, 1, 1))
        assert [r[:4] for r in await read_update(reader, 4)] == [(0, 0, 1, 1)]
        writer.write(update_request(True, 0, 0, 0xFFFF, 0xFFFF))
        await writer.drain()
        await asyncio.sleep(0)
        server.write("hi")
        [(x, y, w, h, _)] = await read_update(reader, 4)
        # only the changed area (the 'hi' glyphs and the moved cursor, first text row) is sent
        assert x == 0 and w <= 3 * 6 and y + h <= 11
        assert server.client_count == 1
        await server.stop()
        assert await reader.read() == b""
        assert server.client_count == 0
    finally:
        writer.close()
        await server.stop()


async def test_unix_socket_and_bad_client_closed():
    import tempfile, os

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vnc.sock")
        server = TextConsoleServer()
        await server.start(port=None, path=path)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            await rfb_handshake(reader, writer)
            writer.write(b"\x07")  # no such client message
            assert await reader.read() == b""
            writer.close()
        finally:
            await server.stop()
        assert not os.path.exists(path)


async def test_clients_keep_their_own_pixel_formats():
    server = TextConsoleServer()
    await server.start()
    formats = [PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0), PixelFormat(), PixelFormat(8, 8, False, True, 7, 7, 3, 0, 3, 6)]
    conns = [await asyncio.open_connection("127.0.0.1", server.port) for _ in formats]
    try:
        for (reader, writer), pf in zip(conns, formats):
            await rfb_handshake(reader, writer)
            writer.write(b"\0\0\0\0" + pf.pack() + update_request(True, 0, 0, 6, 11))
            await read_update(reader, pf.bytes_per_pixel)  # first incremental: full area
            writer.write(update_request(True, 0, 0, 6, 11))
            await writer.drain()
        await asyncio.sleep(0)
        server.write("#")
        for (reader, _), pf in zip(conns, formats):
            [(x, y, w, h, data)] = await read_update(reader, pf.bytes_per_pixel)
            assert len(data) == w * h * pf.bytes_per_pixel
            expected = encode_pixels(server.screen.render()[y:y + h, x:x + w], pf)
            assert data == expected and any(data)
    finally:
        for _, writer in conns:
            writer.close()
        await server.stop()
