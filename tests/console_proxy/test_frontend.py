"""The CONNECT front end: routing, limits, aiohttp pass-through, resource hygiene."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess

import aiohttp
import pytest

from console_proxy import CONNECT_OK
from console_proxy.server import TextConsoleServer

from .conftest import Agent, eventually, read_head, rfb_handshake


@pytest.fixture
async def console():
    server = TextConsoleServer(name="fe")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def agent(console):
    agent = await Agent(("127.0.0.1", console.port)).start()
    yield agent
    await agent.stop()


async def _raw(agent, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(data)
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_http_get_post_keepalive_through_front_end(agent):
    async with aiohttp.ClientSession(f"http://127.0.0.1:{agent.port}") as session:
        for _ in range(3):
            async with session.get("/hello") as resp:
                assert (resp.status, await resp.text()) == (200, "hello")
            async with session.post("/echo", data=b"x" * 100_000) as resp:
                assert await resp.read() == b"x" * 100_000
        assert len(session.connector._conns) == 1  # one kept-alive connection served all six


async def test_pipelined_requests_in_one_segment(agent):
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(request + request + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
    data = await reader.read()
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.count(b"hello") == 2 and data.endswith(b"abc")


async def test_connect_tunnels_with_exact_reply_and_leftover_bytes(agent):
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    # head, and the start of the RFB conversation in the same segment
    writer.write(b"CONNECT /console?ref=OpaqueRef:vm HTTP/1.0\r\nCookie: session_id=OpaqueRef:good\r\n\r\n")
    assert await read_head(reader) == CONNECT_OK
    version, w, h, _, name = await rfb_handshake(reader, writer)
    assert (version, name) == (b"RFB 003.008\n", b"fe")
    writer.close()
    head = agent.connects[-1]
    assert (head.path, head.query["ref"], head.version) == ("/console", "OpaqueRef:vm", "1.0")


@pytest.mark.parametrize("request_bytes, status", [
    (b"CONNECT /console?ref=x HTTP/1.1\r\n\r\n", b"401"),
    (b"CONNECT /other HTTP/1.1\r\n\r\n", b"404"),
    (b"CONNECT nonsense\r\n\r\n", b"400"),
    (b"CONNECT /console HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
    (b"CONNECT /console HTTP/1.1\r\nX: \x01\r\n\r\n", b"400"),
])
async def test_connect_errors(agent, request_bytes, status):
    reply = await _raw(agent, request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status)
    assert b"\r\nConnection: close\r\n" in reply
    if status == b"401":
        assert b'\r\nWWW-Authenticate: Basic realm="xapi"\r\n' in reply


async def test_garbage_goes_to_aiohttp_and_gets_400(agent):
    reply = await _raw(agent, b"\x16\x03\x01garbage")       # a TLS hello, no end of head
    assert reply.startswith(b"HTTP/1.0 400") and b"HTTPS traffic" in reply  # aiohttp's own answer


async def test_oversized_head_431(agent):
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    writer.write(b"CONNECT /console HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    try:
        reply = await reader.read(4096)
    except ConnectionResetError:  # the server may close while we are still sending
        pytest.skip("reset before the reply could be read")
    writer.close()
    assert reply.startswith(b"HTTP/1.1 431")


async def test_slow_head_408(console):
    agent = await Agent(("127.0.0.1", console.port), head_timeout=0.2).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"CONNECT /console HT")  # and then nothing
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408")
    finally:
        await agent.stop()


async def test_half_open_clients(agent):
    for partial, expected in ((b"CONNECT /cons", b"HTTP/1.1 400"), (b"", b"")):
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(partial)
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        assert reply.startswith(expected) and (expected or reply == b"")
    await eventually(lambda: agent.front_end.active == 0)


async def test_upstream_gone_is_404(console):
    agent = await Agent("/nonexistent/vnc.sock").start()
    try:
        reply = await _raw(agent, b"CONNECT /console?session_id=OpaqueRef:good HTTP/1.0\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 404")
    finally:
        await agent.stop()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_500_tunnels_opened_and_dropped_leave_nothing(agent):
    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"CONNECT /console HTTP/1.0\r\nCookie: session_id=OpaqueRef:good\r\n\r\n")
        assert await read_head(reader) == CONNECT_OK
        assert await reader.readexactly(12) == b"RFB 003.008\n"
        writer.transport.abort()

    await one()  # warm up lazily created resources before counting
    await eventually(lambda: agent.front_end.active == 0)
    fds, tasks = _fd_count(), len(asyncio.all_tasks())
    for start in range(0, 500, 100):
        await asyncio.gather(*(one() for _ in range(100)))
    await eventually(lambda: agent.front_end.active == 0 and _fd_count() <= fds)
    await eventually(lambda: len(asyncio.all_tasks()) <= tasks)
    assert _fd_count() <= fds and len(asyncio.all_tasks()) <= tasks


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    path = tmp_path_factory.mktemp("tls")
    cert, key = path / "cert.pem", path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_tls_and_unix_sites(console, tls_files, tmp_path):
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    unix_path = str(tmp_path / "agent.sock")
    agent = await Agent(("127.0.0.1", console.port)).start(ssl_context=server_ctx, unix_path=unix_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{agent.port}/hello", ssl=client_ctx) as resp:
                assert await resp.text() == "hello"
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(unix_path)) as session:
            async with session.get("http://agent/hello") as resp:
                assert await resp.text() == "hello"
        for opener in (lambda: asyncio.open_connection("127.0.0.1", agent.port, ssl=client_ctx),
                       lambda: asyncio.open_unix_connection(unix_path)):
            reader, writer = await opener()
            writer.write(b"CONNECT /console HTTP/1.0\r\nCookie: session_id=OpaqueRef:good\r\n\r\n")
            assert await read_head(reader) == CONNECT_OK
            assert (await rfb_handshake(reader, writer))[4] == b"fe"
            writer.close()
    finally:
        await agent.stop()


async def test_forwarder_over_tls(console, tls_files):
    from console_proxy import ConsoleForwarder

    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    agent = await Agent(("127.0.0.1", console.port)).start(ssl_context=server_ctx)
    forwarder = ConsoleForwarder(f"https://127.0.0.1:{agent.port}/console?session_id={Agent.SESSION}",
                                 ssl_context=ssl.create_default_context(cafile=str(cert)))
    await forwarder.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", forwarder.port)
        assert (await rfb_handshake(reader, writer))[4] == b"fe"  # plain RFB on the local side
        writer.close()
    finally:
        await forwarder.stop()
        await agent.stop()


def test_head_parsing():
    from console_proxy.frontend import parse_connect_head

    head = parse_connect_head(b"CONNECT //evil/console?ref=a%3Ab HTTP/1.1\r\n"
                              b"Cookie: session_id=OpaqueRef:x; other=1\r\nHost:  h \r\n\r\n", b"RFB")
    assert head.path == "//evil/console"  # a path, never an authority
    assert head.query["ref"] == "a:b" and head.cookies == {"session_id": "OpaqueRef:x", "other": "1"}
    assert head.header("HOST") == "h" and head.leftover == b"RFB"
    with pytest.raises(ValueError):
        parse_connect_head(b"CONNECT host:443 HTTP/1.1\r\n\r\n")  # classic proxy CONNECT is not ours


# --- what floods of connections may not take (issue 14 items 2 and 16) ---------------------
async def test_a_slow_http_head_is_timed_out(console):
    agent = await Agent(("127.0.0.1", console.port), head_timeout=0.2).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n")     # and the blank line never comes
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 408")
        await eventually(lambda: agent.front_end.active == 0)
    finally:
        await agent.stop()


async def test_oversized_http_heads_are_refused_in_one_rate_limited_line(agent, caplog):
    caplog.set_level("INFO")
    for _ in range(50):
        reply = await _raw(agent, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 +
                           b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 431")
    lines = [r for r in caplog.records if "431" in r.getMessage()]
    assert 1 <= len(lines) <= 3 and not any(r.exc_info for r in caplog.records)
    assert (await _raw(agent, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            ).endswith(b"hello")


async def test_new_connections_evict_the_oldest_unfinished_head(console):
    agent = await Agent(("127.0.0.1", console.port), max_pending=5).start()
    try:
        slow = [await asyncio.open_connection("127.0.0.1", agent.port) for _ in range(5)]
        for _, w in slow:
            w.write(b"GET /hello HT")
        await eventually(lambda: len(agent.front_end._sniffing) == 5)
        reply = await _raw(agent, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert reply.endswith(b"hello")                           # served at once
        assert (await slow[0][0].read()).startswith(b"HTTP/1.1 408")   # the oldest went
        assert len(agent.front_end._sniffing) == 4
        for _, w in slow:
            w.close()
    finally:
        await agent.stop()


async def test_past_the_connection_limit_a_new_one_gets_503(console):
    agent = await Agent(("127.0.0.1", console.port), max_connections=3).start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", agent.port) for _ in range(3)]
        for _, w in held:
            w.write(b"GET /hel")
        await eventually(lambda: agent.front_end.connections() == 3)
        assert (await _raw(agent, b"GET /hello HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 503")
        for _, w in held:
            w.close()
        await eventually(lambda: agent.front_end.connections() == 0)
        assert (await _raw(agent, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                ).endswith(b"hello")
    finally:
        await agent.stop()


async def test_a_console_server_that_never_speaks_gets_no_200(console):
    """Issue 14 item 7: a connect can succeed on a full listen queue (the kernel completes it,
    nobody accepts it). A CONNECT is answered 200 only once the RFB server said its version;
    otherwise UpstreamUnavailable (the daemon's 404), never a 200 with no bytes after it."""
    from console_proxy import UpstreamUnavailable
    from console_proxy.tunnel import connect_upstream

    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)                        # and never accept()
    try:
        with pytest.raises(UpstreamUnavailable, match="did not answer|not reachable"):
            await connect_upstream(mute.getsockname(), timeout=0.3, server_speaks_first=True)
    finally:
        mute.close()
    tunnel = await connect_upstream(("127.0.0.1", console.port), timeout=5,
                                    server_speaks_first=True)
    assert b"".join(tunnel.server._early).startswith(b"RFB 003.")     # kept for the client
    tunnel.close()
