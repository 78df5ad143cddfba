"""Tunnels: the whole CONNECT path with a real viewer, half-close, idle timeout, the close handle."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from console_proxy import (CONNECT_OK, ConsoleForwarder, ForwardError, TextConsoleServer,
                           UpstreamBusy, UpstreamUnavailable, connect_console, reply_error)
from console_proxy.tunnel import Openings, connect_upstream
from console_proxy.forwarder import MAX_REDIRECTS
from console_proxy.keys import LineEditor

from .conftest import Agent, eventually, read_head, rfb_handshake, vnc_capture, vnc_type


@pytest.fixture
async def console():
    server = TextConsoleServer(name="tunnelled")
    server.on_text = LineEditor(server.write, lambda line: server.write(f"ran {line}\n$ ")).feed
    server.write("$ ")
    await server.start()
    yield server
    await server.stop()


async def test_vncdotool_through_forwarder_front_end_and_tunnel(vnc_api, console, tmp_path):
    unix_path = str(tmp_path / "vnc.sock")
    await console.stop()
    await console.start(port=None, path=unix_path)  # the VNC server on a Unix socket, like vncterm
    agent = await Agent(unix_path).start()
    forwarder = ConsoleForwarder(f"http://127.0.0.1:{agent.port}/console?ref=OpaqueRef:vm",
                                 session_id=Agent.SESSION)
    await forwarder.start()
    try:
        client = await asyncio.to_thread(vnc_api.connect, f"127.0.0.1::{forwarder.port}", timeout=20)
        try:
            np.testing.assert_array_equal(await vnc_capture(client), console.screen.render())
            await vnc_type(client, "ls\r")
            await eventually(lambda: "ran ls" in console.screen.text())
            np.testing.assert_array_equal(await vnc_capture(client, incremental=True), console.screen.render())
            assert len(agent.front_end.tunnels) == 1 and len(forwarder.tunnels) == 1
        finally:
            await asyncio.to_thread(client.disconnect)
        await eventually(lambda: not agent.front_end.tunnels and not forwarder.tunnels)
        assert agent.connects[0].header("Cookie") == f"session_id={Agent.SESSION}"
    finally:
        await forwarder.stop()
        await agent.stop()


async def test_forwarder_refused_by_agent(console):
    agent = await Agent(("127.0.0.1", console.port)).start()
    forwarder = ConsoleForwarder(f"http://127.0.0.1:{agent.port}/console?ref=x", username="root",
                                 password="wrong", host_header="pool-master")
    await forwarder.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", forwarder.port)
        assert await reader.read() == b""  # the viewer is closed ...
        writer.close()
        await eventually(lambda: bool(forwarder.failures))
        assert isinstance(forwarder.failures[0], ForwardError) and forwarder.failures[0].status == 401
        head = agent.connects[0]
        assert (head.target, head.version, head.header("host")) == ("/console?ref=x", "1.0", "pool-master")
        assert head.header("authorization") == "Basic " + base64.b64encode(b"root:wrong").decode()
    finally:
        await forwarder.stop()
        await agent.stop()


async def _redirector(location):
    """Another pool host's answer to CONNECT for a VM it does not run: 302 to `location(port)`."""
    heads = []

    async def handle(reader, writer):
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 302 Found\r\nConnection: close\r\nlocation: %s\r\n\r\n"
                     % location(server.sockets[0].getsockname()[1]).encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, heads


async def test_forwarder_follows_302_to_the_resident_host(console):
    agent = await Agent(("127.0.0.1", console.port)).start()
    elsewhere, heads = await _redirector(
        lambda _: f"http://127.0.0.1:{agent.port}/console?ref=OpaqueRef:vm")
    try:
        url = f"http://127.0.0.1:{elsewhere.sockets[0].getsockname()[1]}/console?uuid=u"
        transport, _, leftover = await connect_console(url, session_id=Agent.SESSION)
        try:
            assert leftover == b"" and not transport.is_closing()
            # the same credentials go to the host that runs the VM
            assert len(heads) == 1 and f"session_id={Agent.SESSION}".encode() in heads[0]
            assert agent.connects[-1].target == "/console?ref=OpaqueRef:vm"
            assert agent.connects[-1].header("Cookie") == f"session_id={Agent.SESSION}"
        finally:
            transport.close()
    finally:
        elsewhere.close()
        await agent.stop()


async def test_forwarder_gives_up_on_a_redirect_loop():
    loop_server, heads = await _redirector(lambda port: "/console?uuid=again")  # relative: itself
    try:
        url = f"http://127.0.0.1:{loop_server.sockets[0].getsockname()[1]}/console?uuid=u"
        with pytest.raises(ForwardError) as e:
            await connect_console(url, session_id=Agent.SESSION)
        assert e.value.status == 302 and len(heads) == MAX_REDIRECTS + 1
        # a redirect to something other than http(s) is not followed at all
        heads.clear()
        odd, odd_heads = await _redirector(lambda port: "ftp://127.0.0.1/console")
        try:
            with pytest.raises(ForwardError) as e:
                await connect_console(f"http://127.0.0.1:{odd.sockets[0].getsockname()[1]}/c")
            assert e.value.status == 302 and len(odd_heads) == 1
        finally:
            odd.close()
    finally:
        loop_server.close()


async def _echo_server():
    """Upstream that echoes, and after the client's EOF sends a trailer and closes (half-close check)."""
    async def handle(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
        writer.write(b"<trailer after your EOF>")
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_half_close_bulk_and_handle_close():
    echo = await _echo_server()
    agent = await Agent(("127.0.0.1", echo.sockets[0].getsockname()[1])).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        payload = bytes(range(256)) * 16384  # 4 MiB: exercises pause/resume on both legs
        writer.write(b"CONNECT /console HTTP/1.1\r\nCookie: session_id=OpaqueRef:good\r\n\r\n" + payload)
        assert await read_head(reader) == CONNECT_OK

        async def send_and_eof():
            await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send_and_eof())
        echoed = await reader.read(-1)
        await sender
        assert echoed == payload + b"<trailer after your EOF>"
        writer.close()
        await eventually(lambda: not agent.front_end.tunnels)

        # the daemon's handle: VM stopped -> close the tunnel
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"CONNECT /console HTTP/1.1\r\nCookie: session_id=OpaqueRef:good\r\n\r\nping")
        assert await read_head(reader) == CONNECT_OK
        assert await reader.readexactly(4) == b"ping"
        [tunnel] = agent.front_end.tunnels
        assert tunnel.bytes_from_client == 4 and tunnel.bytes_from_server == 4
        tunnel.close("VM halted")
        await tunnel.wait_closed()
        assert await reader.read() == b"" and tunnel.close_reason == "VM halted"
        writer.close()
    finally:
        await agent.stop()
        echo.close()
        await echo.wait_closed()


async def test_idle_timeout_counts_only_input_events():
    console = TextConsoleServer()
    await console.start()
    agent = await Agent(("127.0.0.1", console.port), idle_timeout=0.4).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
        writer.write(b"CONNECT /console HTTP/1.1\r\nCookie: session_id=OpaqueRef:good\r\n\r\n")
        assert await read_head(reader) == CONNECT_OK
        await rfb_handshake(reader, writer)
        [tunnel] = agent.front_end.tunnels
        # update requests do not count as activity: the tunnel still closes for idleness
        for _ in range(100):
            writer.write(b"\x03\x01\x00\x00\x00\x00\x00\x01\x00\x01")
            await asyncio.sleep(0.02)
            if tunnel.closed:
                break
        await tunnel.wait_closed()
        assert tunnel.close_reason == "idle timeout"
        writer.close()
    finally:
        await agent.stop()
        await console.stop()


class _FakeTransport:
    def __init__(self):
        self.data, self.closed = b"", False

    def is_closing(self):
        return self.closed

    def write(self, data):
        self.data += data

    def close(self):
        self.closed = True


@pytest.mark.parametrize("status, kwargs, expected", [
    (401, {"realm": "pool"}, b'WWW-Authenticate: Basic realm="pool"'),
    (403, {}, b"HTTP/1.1 403 Forbidden"),
    (500, {"message": "VM not running here"}, b"VM not running here"),
    (503, {}, b"HTTP/1.1 503 Service Unavailable"),
    (302, {"location": "https://10.0.0.2/console?uuid=u"}, b"Location: https://10.0.0.2/console?uuid=u"),
])
def test_reply_error(status, kwargs, expected):
    transport = _FakeTransport()
    reply_error(transport, status, **kwargs)
    assert expected in transport.data and b"\r\nConnection: close\r\n" in transport.data
    assert transport.closed
    head, body = transport.data.split(b"\r\n\r\n", 1)
    assert f"Content-Length: {len(body)}".encode() in head


async def test_tunnels_are_opened_in_turns_and_a_turn_not_given_is_busy():
    """A burst of CONNECTs is opened `limit` at a time (issue 14 item 7: 500 at once had every
    loop turn run hundreds of openings, other clients waited 120-190 ms); a connection whose
    turn does not come within its timeout gets UpstreamBusy (503), none is left half-open."""
    greeting = asyncio.Event()
    opening = peak = 0

    async def slow_rfb(reader, writer):      # greets only when told to
        nonlocal opening, peak
        opening += 1
        peak = max(peak, opening)
        await greeting.wait()
        opening -= 1
        writer.write(b"RFB 003.008\n")
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(slow_rfb, "127.0.0.1", 0)
    upstream = ("127.0.0.1", server.sockets[0].getsockname()[1])
    openings = Openings(limit=2)
    try:
        opens = [asyncio.create_task(connect_upstream(upstream, server_speaks_first=True,
                                                      openings=openings, timeout=5))
                 for _ in range(6)]
        await eventually(lambda: opening == 2)
        await asyncio.sleep(0.1)
        assert opening == 2, "more than `limit` opened at once"
        with pytest.raises(UpstreamBusy):       # no turn within 0.2 s: busy, not unreachable
            await connect_upstream(upstream, server_speaks_first=True, openings=openings,
                                   timeout=0.2)
        greeting.set()
        tunnels = await asyncio.gather(*opens)
        assert peak == 2 and len(tunnels) == 6
        for t in tunnels:
            t.close("done")
        # the turns of connections that failed are given back
        for _ in range(3):
            with pytest.raises(UpstreamUnavailable) as failed:
                await connect_upstream(("127.0.0.1", 1), openings=openings, timeout=1)
            assert not isinstance(failed.value, UpstreamBusy)
        tunnel = await connect_upstream(upstream, server_speaks_first=True, openings=openings,
                                        timeout=1)
        tunnel.close("done")
    finally:
        server.close()
        await server.wait_closed()
