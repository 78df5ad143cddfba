"""Consoles with the agent in this process (build_app + start_sites, real sockets), where the
tests need a Config knob (RFB 3.3 host console, per-VM limit), a second host record (302), the
agent's own bookkeeping (tasks, tunnels per VM) or HTTPS; and `resolve_console` on its own."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

import aiohttp
import numpy as np
import pytest

from console_proxy import ConsoleForwarder
from httpd.web.console import CONSOLES, ConsoleTarget, Refusal, resolve_console
from httpd.core.calls import call_internal
from httpd.model.events import EventHub
from httpd.web.appkeys import SERVICES
from httpd.model.engines import SQLiteEngine
from httpd.model.store import Store
from tests.in_process import running_agent

from .test_console_screens import (  # noqa: F401 - vnc_api is a fixture
    connect_raw, decode_screen, render_screen, rfb_handshake, vnc_api, vnc_capture, vnc_connect,
)

@pytest.fixture
async def agent_app(tmp_path):
    async with running_agent(tmp_path, console_vm_limit=1, console_rfb_version="3.3") as running:
        yield running


def _ports(urls):
    http = int(next(u for u in urls if u.startswith("http://")).rsplit(":", 1)[1])
    https = int(next(u for u in urls if u.startswith("https://")).rsplit(":", 1)[1])
    unix = next(u for u in urls if u.startswith("unix:"))[5:]
    return http, https, unix


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _start_vm(agent, name: str) -> tuple[str, str]:
    tpl = next(r for r, v in agent.store.all("VM").items() if v["name_label"] == "Debian Etch 4.0")
    vm = await call_internal(agent, "VM.clone", tpl, name)
    await call_internal(agent, "VM.provision", vm)
    await call_internal(agent, "VM.start", vm, False, False)
    return vm, agent.store.get("VM", vm)["uuid"]


async def _closed(consoles, uuid: str) -> None:
    """Wait until the agent has torn down every console of the VM (the limit is 1 here)."""
    async with asyncio.timeout(5):
        while consoles.open_count(uuid):
            await asyncio.sleep(0.01)


def _session(agent) -> dict[str, str]:
    return {"Cookie": f"session_id={agent.sessions.open_session('root', 'tests')}"}


async def test_host_console_rfb33_over_https_with_vncdotool(agent_app, vnc_api):
    app, urls = agent_app
    agent, consoles = app[SERVICES], app[CONSOLES]
    dom0 = agent.host.dom0_ref
    rfb = next(c for c in agent.store.get("VM", dom0)["consoles"]
               if agent.store.get("console", c)["protocol"] == "rfb")
    https = next(u for u in urls if u.startswith("https://"))
    sid = agent.sessions.open_session("root", "tests")
    forwarder = ConsoleForwarder(f"{https}/console?ref={rfb}", session_id=sid,
                                 ssl_context=_insecure())
    await forwarder.start()
    try:
        client = await asyncio.to_thread(vnc_connect, vnc_api, forwarder.port)
        try:
            img = await vnc_capture(client)
            assert client.protocol._version == (3, 3)          # the server offered 3.3
            lines, cursor = decode_screen(img)
            host = agent.store.get("host", agent.host.host_ref)
            assert lines[0] == f"{host['hostname']} - XCP host console" and cursor is None
            assert "  running VMs   0" in lines and any("load average" in l for l in lines)
            np.testing.assert_array_equal(img, consoles.host_console.screen.render())
            np.testing.assert_array_equal(img, render_screen(lines, None))
            await _start_vm(agent, "counted")
            await consoles.host_console.update()               # what the refresh loop does
            lines, _ = decode_screen(await vnc_capture(client))
            assert "  running VMs   1" in lines
        finally:
            await asyncio.to_thread(client.disconnect)
    finally:
        await forwarder.stop()
    assert not forwarder.failures


async def test_every_listener_takes_connect_and_http(agent_app):
    app, urls = agent_app
    agent = app[SERVICES]
    http, https, unix = _ports(urls)
    rfb = next(c for c in agent.store.get("VM", agent.host.dom0_ref)["consoles"]
               if agent.store.get("console", c)["protocol"] == "rfb")
    for where, kw, headers in ((http, {}, _session(agent)), (https, {"ssl": _insecure()}, _session(agent)),
                               (unix, {}, {})):                 # the Unix socket is root
        code, _, reader, writer = await connect_raw(where, f"/console?ref={rfb}", headers, **kw)
        assert code == 200
        assert (await rfb_handshake(reader, writer, b"RFB 003.003\n"))[:3] == (b"RFB 003.003\n", 480, 275)
        writer.close()
        await _closed(app[CONSOLES], agent.store.get("VM", agent.host.dom0_ref)["uuid"])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{https}/console", ssl=_insecure()) as r:
            assert r.status == 400                       # aiohttp answered: not an upgrade
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=unix)) as s:
        async with s.post("http://localhost/jsonrpc", json={
                "jsonrpc": "2.0", "id": 1, "method": "session.login_with_password",
                "params": ["root", "", "2.21", "t"]}) as r:
            assert r.status == 200 and (await r.json())["result"].startswith("OpaqueRef:")


async def test_limit_redirect_and_close_vm(agent_app):
    app, urls = agent_app
    agent, consoles = app[SERVICES], app[CONSOLES]
    http, _, _ = _ports(urls)
    vm, uuid = await _start_vm(agent, "limited")
    q = f"/console?uuid={uuid}"
    code, _, reader, writer = await connect_raw(http, q, _session(agent))
    assert code == 200 and await reader.readexactly(12) == b"RFB 003.003\n"   # as configured
    # the limit (1): a second console of this VM is refused while the first is open
    assert (await connect_raw(http, q, _session(agent)))[0] == 503
    assert consoles.open_count(uuid) == 1
    # the VM stops being ours: close_vm (what vm_stopped calls) closes the tunnel at once,
    # while the domain and its console server are still there
    consoles.vm_stopped(uuid)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()
    assert agent.domains.get(uuid).vnc_address is not None
    await _closed(consoles, uuid)
    code, _, reader, writer = await connect_raw(http, q, _session(agent))
    assert code == 200
    writer.close()
    await _closed(consoles, uuid)
    # the same for a WebSocket bridge (and the limit counts it too)
    async with aiohttp.ClientSession(headers=_session(agent)) as s:
        async with s.ws_connect(f"http://127.0.0.1:{http}{q}") as ws:
            assert (await ws.receive_bytes(timeout=5))[:12] == b"RFB 003.003\n"
            assert (await connect_raw(http, q, _session(agent)))[0] == 503
            consoles.vm_stopped(uuid)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
    await _closed(consoles, uuid)
    # resident on another host this agent knows: 302 to that host's console URL
    other = agent.store.create("host", {"name_label": "other", "address": "192.0.2.7"})
    agent.store.update("VM", vm, {"resident_on": other})
    console_uuid = agent.store.get("console", agent.store.get("VM", vm)["consoles"][0])["uuid"]
    code, fields, _, writer = await connect_raw(http, q, _session(agent))
    writer.close()
    assert code == 302
    assert fields["Location"] == f"https://192.0.2.7:{_ports(urls)[1]}/console?uuid={console_uuid}"


async def test_many_tunnels_leave_no_tasks(agent_app):
    app, urls = agent_app
    agent, consoles = app[SERVICES], app[CONSOLES]
    http, _, _ = _ports(urls)
    consoles.vm_limit = 0                 # this test is about bookkeeping, not the limit
    vt100 = next(c for c in agent.store.get("VM", agent.host.dom0_ref)["consoles"]
                 if agent.store.get("console", c)["protocol"] == "vt100")
    headers = _session(agent)
    await asyncio.sleep(0.1)
    before = len(asyncio.all_tasks())

    async def one(i: int) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", http)
        writer.write(f"CONNECT /console?ref={vt100} HTTP/1.0\r\nCookie: {headers['Cookie']}"
                     "\r\n\r\n".encode())
        status = 0
        if i % 2:
            status = int((await reader.readuntil(b"\r\n\r\n")).split()[1])
        writer.transport.abort()
        return status

    statuses = await asyncio.gather(*(one(i) for i in range(200)))
    assert statuses == [0, 200] * 100
    async with asyncio.timeout(5):
        while consoles.front_end.active or consoles._vms or len(asyncio.all_tasks()) > before:
            await asyncio.sleep(0.02)


_IDLE = 1.0                                                       # --console-idle-timeout here
_KEYS = struct.pack(">BBxxI", 4, 1, 0xFFE1) + struct.pack(">BBxxI", 4, 0, 0xFFE1)  # Shift down, up
_REFRESH = struct.pack(">BBHHHH", 3, 1, 0, 0, 480, 275)          # incremental update request


class _WsPipe:
    """RFB over a WebSocket with a StreamReader/StreamWriter face (for rfb_handshake)."""

    def __init__(self, ws) -> None:
        self.ws, self.buf, self.out = ws, bytearray(), []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    async def send(self, data: bytes) -> None:
        self.write(data)
        while self.out:
            await self.ws.send_bytes(self.out.pop(0))

    async def read(self, n: int = -1) -> bytes:
        """The next frame's bytes (or what is buffered); b"" once the WebSocket is closed."""
        await self.send(b"")
        if not self.buf:
            msg = await self.ws.receive()
            return msg.data if msg.type is aiohttp.WSMsgType.BINARY else b""
        data, self.buf = bytes(self.buf), bytearray()
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self.buf += await self.read() or b""
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


async def _until_closed(reader) -> None:
    """Until the agent closes the console: EOF, or a reset when it closes a socket that still
    holds the client's unread update requests (the kernel answers those with RST)."""
    with contextlib.suppress(ConnectionResetError):
        while await reader.read(65536):
            pass


async def _poke(send, message: bytes, closed: asyncio.Task) -> None:
    """Send `message` every tenth of the idle timeout until the console is closed (or cancelled)."""
    with contextlib.suppress(ConnectionError):
        while not closed.done():
            await send(message)
            await asyncio.sleep(_IDLE / 10)


async def test_console_idle_timeout(tmp_path):
    """--console-idle-timeout: a CONNECT tunnel or WebSocket that only asks for screen updates is
    closed by the agent; one that keeps typing outlives the timeout several times over."""
    async with running_agent(tmp_path, console_idle_timeout=_IDLE) as (app, urls), \
            aiohttp.ClientSession() as http_session:
        agent, consoles = app[SERVICES], app[CONSOLES]
        http = _ports(urls)[0]
        rfb = next(c for c in agent.store.get("VM", agent.host.dom0_ref)["consoles"]
                   if agent.store.get("console", c)["protocol"] == "rfb")
        consoles_open = []                         # (send, reader) per console, idle ones first
        for kind in ("connect", "ws", "connect", "ws"):
            if kind == "connect":
                code, _, reader, writer = await connect_raw(http, f"/console?ref={rfb}", _session(agent))
                assert code == 200

                async def send(data: bytes, writer=writer) -> None:
                    writer.write(data)
                    await writer.drain()
            else:
                ws = await http_session.ws_connect(f"http://127.0.0.1:{http}/console?ref={rfb}",
                                                   headers=_session(agent))
                reader = writer = _WsPipe(ws)
                send = writer.send
            await rfb_handshake(reader, writer)
            consoles_open.append((send, reader))
        assert consoles.open_count(agent.store.get("VM", agent.host.dom0_ref)["uuid"]) == 4
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed = [asyncio.create_task(_until_closed(reader)) for _, reader in consoles_open]
        pokes = [asyncio.create_task(_poke(send, _REFRESH if i < 2 else _KEYS, closed[i]))
                 for i, (send, _) in enumerate(consoles_open)]
        try:
            async with asyncio.timeout(10 * _IDLE):
                await asyncio.gather(*closed[:2])  # the agent closed both idle consoles
            await asyncio.sleep(started + 3 * _IDLE - loop.time())
            assert not closed[2].done() and not closed[3].done()
            assert consoles.open_count(agent.store.get("VM", agent.host.dom0_ref)["uuid"]) == 2
        finally:
            for task in pokes + closed:
                task.cancel()
            await asyncio.gather(*pokes, *closed, return_exceptions=True)
            await consoles_open[3][1].ws.close()
            consoles.close_vm(agent.store.get("VM", agent.host.dom0_ref)["uuid"])


# --- resolve_console on its own --------------------------------------------------------------------
@pytest.fixture
async def store(tmp_path):
    s = Store(SQLiteEngine(str(tmp_path / "db")), EventHub())
    s.open()
    yield s
    await s.close()


def test_refusal_needs_location_exactly_for_302():
    with pytest.raises(ValueError):
        Refusal(302, "elsewhere")
    with pytest.raises(ValueError):
        Refusal(500, "no", location="http://x/")


async def test_resolve_console(store):
    here = store.create("host", {"address": "10.0.0.1"})
    there = store.create("host", {"address": "10.0.0.2"})
    dom0 = store.create("VM", {"is_control_domain": True, "power_state": "Running",
                               "resident_on": here})
    dom0_there = store.create("VM", {"is_control_domain": True, "power_state": "Running",
                                     "resident_on": there})
    guest = store.create("VM", {"power_state": "Running", "resident_on": here})
    away = store.create("VM", {"power_state": "Running", "resident_on": there})
    lost = store.create("VM", {"power_state": "Running", "resident_on": "OpaqueRef:gone"})
    halted = store.create("VM", {"power_state": "Halted"})
    novnc = store.create("VM", {"power_state": "Paused", "resident_on": here})
    cons = {}
    for vm in (dom0, dom0_there, guest, away):
        for proto in ("vt100", "rfb"):
            cons[vm, proto] = store.create("console", {"protocol": proto, "VM": vm})
    store.create("console", {"protocol": "vt100", "VM": novnc})
    uuid = lambda cls, ref: store.get(cls, ref)["uuid"]  # noqa: E731

    def resolve(**query):
        return resolve_console(store, query, host_ref=here, base_url="https://10.0.0.1:8443")

    g = uuid("VM", guest)
    assert resolve(uuid=g) == ConsoleTarget(g, "rfb")                 # a VM: its rfb console
    assert resolve(ref=guest) == ConsoleTarget(g, "rfb")
    assert resolve(ref=cons[guest, "vt100"]) == ConsoleTarget(g, "vt100")
    assert resolve(uuid=uuid("console", cons[guest, "vt100"])) == ConsoleTarget(g, "vt100")
    assert resolve(ref=cons[dom0, "rfb"]) == ConsoleTarget(uuid("VM", dom0), "rfb", True)
    for query in ({}, {"uuid": ""}, {"uuid": "nope"}, {"ref": "OpaqueRef:nope"},
                  {"ref": halted}, {"uuid": uuid("VM", halted)}, {"ref": lost}):
        assert resolve(**query).status == 500, query
    assert resolve(ref=novnc) == Refusal(404, f"VM {uuid('VM', novnc)} has no rfb console")
    r = resolve(uuid=uuid("VM", away))
    assert (r.status, r.location) == (302, "https://10.0.0.2:8443/console?uuid="
                                      + uuid("console", cons[away, "rfb"]))
    r = resolve(ref=cons[dom0_there, "vt100"], session_id="OpaqueRef:s 1")
    assert r.location == (f"https://10.0.0.2:8443/console?ref={cons[dom0_there, 'vt100']}"
                          "&session_id=OpaqueRef:s+1")
