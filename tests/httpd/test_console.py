"""Consoles against the real server (a subprocess): CONNECT /console and WebSocket tunnels to a
running VM's RFB console, driven by vncdotool, the forwarder and `xcp-httpd console-forward`."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from console_proxy import ConsoleForwarder
from tests.server import Server

from .test_console_screens import (  # noqa: F401 - vnc_api is a fixture
    capture_until, connect_raw, login_and_echo, rfb_handshake, vnc_api, vnc_connect, vnc_type,
)

ROOT = Path(__file__).resolve().parents[2]


def start_vm(x, name: str, *, disable_vnc: bool = False) -> tuple[str, str]:
    tpl = x.VM.get_by_name_label("Debian Etch 4.0")[0]
    vm = x.VM.clone(tpl, name)
    x.VM.provision(vm)
    if disable_vnc:
        x.VM.add_to_other_config(vm, "disable_pv_vnc", "1")
    x.VM.start(vm, False, False)
    return vm, x.VM.get_uuid(vm)


@pytest.fixture(scope="module")
def sdk(server):
    s = server.session()
    yield s
    s.xenapi.session.logout()


@pytest.fixture(scope="module")
def idle_vm(sdk):
    """A running VM the tests only look at (no typing)."""
    return start_vm(sdk.xenapi, "console-idle")


def cookie(sdk) -> dict[str, str]:
    return {"Cookie": f"session_id={sdk._session}"}


# --- vncdotool through the tunnel ----------------------------------------------------------------
@pytest.mark.parametrize("client_version", [(3, 8), (3, 3)], ids=["rfb3.8", "rfb3.3"])
async def test_vncdotool_types_through_connect(server, sdk, vnc_api, client_version):
    name = f"console-{client_version[0]}{client_version[1]}"
    vm, uuid = start_vm(sdk.xenapi, name)
    forwarder = ConsoleForwarder(f"{server.url}/console?uuid={uuid}", session_id=sdk._session)
    await forwarder.start()
    try:
        client = await asyncio.to_thread(vnc_connect, vnc_api, forwarder.port,
                                         max_version=client_version)
        try:
            await login_and_echo(client, name, "hello")
            assert client.protocol._version == client_version
        finally:
            await asyncio.to_thread(client.disconnect)
    finally:
        await forwarder.stop()
    assert not forwarder.failures


async def test_console_forward_command(server, sdk, vnc_api, tmp_path):
    name = "console-cli"
    start_vm(sdk.xenapi, name)
    pw = tmp_path / "pw"
    pw.write_text(server.password + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "httpd.cli", "console-forward", name, "--port", "0",
         "--url", server.url, "--password-file", str(pw)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.startswith("console-forward: VM "), line + proc.stderr.read()
        port = int(line.split("(vncviewer 127.0.0.1::")[1].split(")")[0])
        client = await asyncio.to_thread(vnc_connect, vnc_api, port)
        try:
            await login_and_echo(client, name, "forwarded")
        finally:
            await asyncio.to_thread(client.disconnect)
        sessions = _session_count(sdk)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = await asyncio.to_thread(proc.wait, 10)
    assert rc == 0, proc.stderr.read()
    assert _session_count(sdk) == sessions - 1     # it logged out


def _session_count(sdk) -> int:
    """Every live session (a client lists only its own; event.from counts them all)."""
    return int(sdk.xenapi.event_from(["session"], "", 0.0)["valid_ref_counts"]["session"])


def test_console_forward_unknown_vm(server, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text(server.password)
    r = subprocess.run([sys.executable, "-m", "httpd.cli", "console-forward", "no-such-vm",
                        "--port", "0", "--url", server.url, "--password-file", str(pw)],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "0 VMs match 'no-such-vm'" in r.stderr


# --- WebSocket -------------------------------------------------------------------------------------
class WsStream:
    """Bytes out of binary WebSocket messages, whatever their boundaries."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.buf = ws, bytearray()

    async def readexactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = await asyncio.wait_for(self.ws.receive(), 10)
            assert msg.type is aiohttp.WSMsgType.BINARY, msg
            self.buf += msg.data
        out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def write(self, data: bytes) -> None:
        asyncio.get_running_loop().create_task(self.ws.send_bytes(data))


@pytest.mark.parametrize("offer", [("binary",), ()], ids=["binary", "no-offer"])
async def test_websocket_rfb_handshake(server, sdk, idle_vm, offer):
    _, uuid = idle_vm
    async with aiohttp.ClientSession(cookies={"session_id": sdk._session}) as http:
        async with http.ws_connect(f"{server.url}/console?uuid={uuid}", protocols=offer) as ws:
            assert ws.protocol == ("binary" if offer else None)
            stream = WsStream(ws)
            version, width, height, _, name = await rfb_handshake(stream, stream)
            assert (version, width, height, name) == (b"RFB 003.008\n", 480, 275, b"console-idle")


async def test_websocket_refusals(server, sdk, idle_vm):
    _, uuid = idle_vm
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/console?uuid={uuid}",
                            headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                     "Sec-WebSocket-Version": "13"}) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="xapi"'
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await http.ws_connect(f"{server.url}/console?uuid=nope&session_id={sdk._session}")
        assert e.value.status == 500
        async with http.get(f"{server.url}/console?uuid={uuid}&session_id={sdk._session}") as r:
            assert r.status == 400            # a GET that is no upgrade


# --- refusals --------------------------------------------------------------------------------------
async def test_connect_statuses(server, sdk, idle_vm):
    x = sdk.xenapi
    _, uuid = idle_vm
    port, q = server.port, f"/console?uuid={uuid}"

    async def status(target, headers=None):
        code, fields, _, writer = await connect_raw(port, target, headers)
        writer.close()
        return code, fields

    code, fields = await status(q)
    assert code == 401 and fields["WWW-Authenticate"] == 'Basic realm="xapi"'
    assert (await status(q, {"Cookie": "session_id=OpaqueRef:bogus"}))[0] == 401
    assert (await status(q + "&session_id=OpaqueRef:bogus"))[0] == 401
    bad = base64.b64encode(b"root:wrong").decode()
    assert (await status(q, {"Authorization": f"Basic {bad}"}))[0] == 401
    good = base64.b64encode(f"root:{server.password}".encode()).decode()
    assert (await status(q, {"Authorization": f"Basic {good}"}))[0] == 200
    assert (await status(q + f"&session_id={sdk._session}"))[0] == 200
    assert (await status(q, cookie(sdk)))[0] == 200
    # resolution
    assert (await status("/console?uuid=00000000-0000-0000-0000-000000000000", cookie(sdk)))[0] == 500
    assert (await status("/console?ref=OpaqueRef:nope", cookie(sdk)))[0] == 500
    assert (await status("/console", cookie(sdk)))[0] == 500
    assert (await status("/elsewhere?uuid=" + uuid, cookie(sdk)))[0] == 404
    halted = x.VM.clone(x.VM.get_by_name_label("Debian Etch 4.0")[0], "console-halted")
    assert (await status(f"/console?uuid={x.VM.get_uuid(halted)}", cookie(sdk)))[0] == 500
    assert (await status(f"/console?ref={halted}", cookie(sdk)))[0] == 500
    # a VM ref and the console's own uuid and ref reach the same console
    vm = x.VM.get_by_uuid(uuid)
    rfb = [c for c in x.VM.get_consoles(vm) if x.console.get_protocol(c) == "rfb"][0]
    for target in (f"/console?ref={vm}", f"/console?ref={rfb}",
                   f"/console?uuid={x.console.get_uuid(rfb)}"):
        code, _, reader, writer = await connect_raw(port, target, cookie(sdk))
        assert code == 200 and await reader.readexactly(12) == b"RFB 003.008\n"
        writer.close()
    # disable_pv_vnc: no rfb console (404); its vt100 console still works
    novnc, novnc_uuid = start_vm(x, "console-novnc", disable_vnc=True)
    assert (await status(f"/console?uuid={novnc_uuid}", cookie(sdk)))[0] == 404
    vt100 = x.VM.get_consoles(novnc)
    assert [x.console.get_protocol(c) for c in vt100] == ["vt100"]
    code, _, reader, writer = await connect_raw(port, f"/console?ref={vt100[0]}", cookie(sdk))
    assert code == 200 and b"Started domain console-novnc" in await reader.readuntil(b")")
    writer.close()


async def test_host_console_over_unix_socket(server, sdk):
    """The control domain's consoles: local callers are root; the text names this host."""
    x = sdk.xenapi
    host = x.host.get_all()[0]
    dom0 = x.host.get_control_domain(host)
    by_protocol = {x.console.get_protocol(c): c for c in x.VM.get_consoles(dom0)}
    code, _, reader, writer = await connect_raw(server.socket_path, f"/console?ref={by_protocol['rfb']}")
    assert code == 200
    assert (await rfb_handshake(reader, writer))[:3] == (b"RFB 003.008\n", 480, 275)
    writer.close()
    code, _, reader, writer = await connect_raw(server.socket_path, f"/console?ref={by_protocol['vt100']}")
    assert code == 200
    text = (await reader.readuntil(b"running VMs")).decode()
    assert f"{x.host.get_hostname(host)} - XCP host console" in text and "load average" in text
    writer.close()


# --- teardown --------------------------------------------------------------------------------------
def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _settle(pid: int, expected: int, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while (n := _fds(pid)) > expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return n


async def test_500_tunnels_opened_and_dropped_leave_no_fds(server, sdk, idle_vm):
    _, uuid = idle_vm
    pid = server.proc.pid
    target = f"/console?uuid={uuid}"
    # warm up (lazy sockets, executor threads), then count
    code, _, reader, writer = await connect_raw(server.port, target, cookie(sdk))
    writer.close()
    baseline = await _settle(pid, 0, timeout=1.0)

    async def one(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"CONNECT {target} HTTP/1.0\r\nCookie: session_id={sdk._session}\r\n\r\n".encode())
        if i % 3 == 1:                         # tunnel open (the VM console server accepts
            # 500 at once only as fast as its listen backlog lets it: the RFB bytes come later)
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        elif i % 3 == 2:
            await writer.drain()
            writer.write_eof()                 # half-open: the client says no more
            await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()               # i % 3 == 0: dropped before any answer

    async with asyncio.timeout(30):
        await asyncio.gather(*(one(i) for i in range(500)))
    assert await _settle(pid, baseline) <= baseline
    # and the server still answers
    code, _, reader, writer = await connect_raw(server.port, target, cookie(sdk))
    assert code == 200 and await reader.readexactly(12) == b"RFB 003.008\n"
    writer.close()


async def test_vm_stop_closes_its_tunnels(server, sdk):
    x = sdk.xenapi
    vm, uuid = start_vm(x, "console-stop")
    tunnels = []
    for target in (f"/console?uuid={uuid}", f"/console?ref={x.VM.get_consoles(vm)[-1]}"):
        code, _, reader, writer = await connect_raw(server.port, target, cookie(sdk))
        assert code == 200
        await reader.read(12)
        tunnels.append((reader, writer))
    async with aiohttp.ClientSession(cookies={"session_id": sdk._session}) as http:
        async with http.ws_connect(f"{server.url}/console?uuid={uuid}") as ws:
            stream = WsStream(ws)
            assert await stream.readexactly(12) == b"RFB 003.008\n"
            await asyncio.to_thread(x.VM.hard_shutdown, vm)
            async with asyncio.timeout(5):
                for reader, writer in tunnels:
                    while await reader.read(65536):
                        pass                       # EOF: the agent closed the tunnel
                    writer.close()
                msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    code, _, _, writer = await connect_raw(server.port, f"/console?uuid={uuid}", cookie(sdk))
    writer.close()
    assert code == 500


async def test_console_forward_follows_a_reboot_and_an_agent_restart(tmp_path, vnc_api):
    """The forwarder looks the console up for each viewer: after `VM.clean_reboot` (a new
    console) and an agent restart (sessions may be gone: it logs in again) viewers still get
    the guest's screen, with no restart of the forwarder."""
    with socket.socket() as s:           # a fixed port the forwarder keeps across the restart
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server(tmp_path / "var", "--listen", f"127.0.0.1:{port}").start()
    name = "console-follow"
    pw = tmp_path / "pw"
    pw.write_text(srv.password + "\n")
    proc = None
    try:
        x = srv.session().xenapi
        vm, _ = start_vm(x, name)
        proc = subprocess.Popen(
            [sys.executable, "-m", "httpd.cli", "console-forward", name, "--port", "0",
             "--url", f"http://127.0.0.1:{port}", "--password-file", str(pw)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        assert line.startswith("console-forward: VM "), line + proc.stderr.read()
        local = int(line.split("(vncviewer 127.0.0.1::")[1].split(")")[0])

        async def viewer(word: str, *, logged_in: bool = False) -> None:
            client = await asyncio.to_thread(vnc_connect, vnc_api, local)
            try:
                if not logged_in:
                    await login_and_echo(client, name, word)
                    return
                # the guest kept running through the agent's restart: still logged in
                await capture_until(client, lambda ls: f"root@{name}:~#" in ls)
                await vnc_type(client, f"echo {word}\r")
                await capture_until(client, lambda ls: word in ls)
            finally:
                await asyncio.to_thread(client.disconnect)

        await viewer("before")
        first = x.VM.get_consoles(vm)
        x.VM.clean_reboot(vm)
        assert x.VM.get_consoles(vm) != first          # the reboot made a new console
        await viewer("rebooted")
        srv.restart()
        assert srv.session().xenapi.VM.get_power_state(vm) == "Running"
        await viewer("restarted", logged_in=True)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            await asyncio.to_thread(proc.wait, 10)
        srv.stop()
    assert proc.returncode == 0, proc.stderr.read()
