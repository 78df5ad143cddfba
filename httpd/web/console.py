"""Consoles over HTTP: `CONNECT /console?...`, WebSocket `GET /console?...`, the host's own console.

- `resolve_console` (pure: database records in, decision out) says which console a query names
  and whether this host serves it: `uuid` = a VM (its first `rfb` console) or a console, `ref` =
  a VM ref or a console ref. Missing/unknown/not running -> 500 (as xapi), VM with no `rfb`
  console -> 404, resident on another host we know -> 302 to that host's console URL.
- `Consoles` owns the listeners' `ConnectFrontEnd`, authorises with the shared credential check
  (`http_auth.credentials_session`), finds the console server (the VM's domain, or `HostConsole`
  for the control domain), enforces the optional per-VM limit (503) and keeps every tunnel and
  WebSocket bridge per VM, so a VM that stops (`Lifecycle.vm_events`) closes its consoles.
- `HostConsole`: the control domain's console shows this host's status (hostname, uptime, load,
  memory, running VMs), refreshed every few seconds, as RFB and as a vt100 text stream.

`setup(app)` wires it all into the application; `start_sites` puts the front end on every site.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import os
import socket
from pathlib import Path
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Callable, Mapping

from aiohttp import web
from yarl import URL

from console_proxy import (
    ConnectClient, ConnectFrontEnd, TextConsoleServer, TextScreen, Tunnel, Upstream,
    UpstreamBusy, UpstreamUnavailable, bridge_websocket,
)
from console_proxy.vt100 import Vt100Server

from ..backends.base import DomainBackend
from ..model.identity import ThisHost
from ..core.locations import Locations
from ..core.resident import elsewhere
from ..core.sessions import SessionManager
from ..model.errors import XenAPIError
from ..model.store import Store
from ..stats.sources import ProcReader
from .auth import Credentials, credentials_session, http_session, is_local_socket

__all__ = ["CONSOLES", "ConsoleTarget", "Consoles", "HostConsole", "HostStatus", "Refusal",
           "format_host_status", "resolve_console", "setup"]

log = logging.getLogger(__name__)

REALM = "xapi"
HOST_REFRESH = 3.0             # seconds between two pictures of the host console
_VT100_BACKLOG = 64 * 1024     # bytes queued for a host vt100 reader before it is dropped
_LIVE = ("Running", "Paused")


# --- resolution (pure) -------------------------------------------------------------------------
@dataclass(frozen=True)
class ConsoleTarget:
    """A console this host serves: the VM's domain (or the host console) and the protocol."""

    vm_uuid: str
    protocol: str                 # "rfb" | "vt100" | "rdp"
    host_console: bool = False    # the control domain: this agent's own console


@dataclass(frozen=True)
class Refusal:
    """An answer other than a tunnel: the HTTP status, a one-line reason, a redirect target."""

    status: int
    message: str
    location: str | None = None

    def __post_init__(self) -> None:
        if (self.status == 302) != (self.location is not None):
            raise ValueError("a 302 needs a Location and only a 302 has one")


def _lookup(store: "Store", cls: str, *, ref: str | None, uuid: str | None) -> str | None:
    if ref:
        return ref if store.find(cls, ref) is not None else None
    try:
        return store.ref_of_uuid(cls, uuid or "")
    except XenAPIError:
        return None


def resolve_console(store: "Store", query: Mapping[str, str], *, host_ref: str,
                    base_url: str) -> ConsoleTarget | Refusal:
    """Which console `?ref=`/`?uuid=` names and whether this host (`host_ref`) serves it.

    `base_url` is how clients reach this agent ("https://address[:port]"); a redirect keeps its
    scheme and port and names the resident host's address, as that host's `location` would.
    """
    ref, uuid = query.get("ref") or None, query.get("uuid") or None
    if ref is None and uuid is None:
        return Refusal(500, "missing ref or uuid parameter")
    console_ref = _lookup(store, "console", ref=ref, uuid=uuid)
    if console_ref is not None:
        console = store.get("console", console_ref)
        vm_ref = console["VM"]
    else:
        vm_ref = _lookup(store, "VM", ref=ref, uuid=uuid)
        if vm_ref is None:
            return Refusal(500, f"no console or VM {ref or uuid}")
        console = None
    vm = store.find("VM", vm_ref)
    if vm is None:
        return Refusal(500, f"console {console_ref} belongs to no VM")
    if vm["power_state"] not in _LIVE:
        return Refusal(500, f"VM {vm['uuid']} is {vm['power_state']}, not running")
    if console is None:
        rfb = [c for c in vm["consoles"] if store.get("console", c)["protocol"] == "rfb"]
        if rfb:
            console_ref, console = rfb[0], store.get("console", rfb[0])
    if vm["resident_on"] != host_ref:
        origin = elsewhere(store, vm, host_ref=host_ref, base_url=base_url)
        if origin is None:
            return Refusal(500, f"VM {vm['uuid']} is not running on this host")
        if console is None:
            key = f"uuid={vm['uuid']}"
        else:
            key = f"ref={console_ref}" if vm["is_control_domain"] else f"uuid={console['uuid']}"
        session = query.get("session_id")
        if session:
            key += "&" + URL.build(query={"session_id": session}).raw_query_string
        host_uuid = store.get("host", vm["resident_on"])["uuid"]
        return Refusal(302, f"VM {vm['uuid']} runs on host {host_uuid}",
                       location=f"{origin}/console?{key}")
    if console is None:
        return Refusal(404, f"VM {vm['uuid']} has no rfb console")
    return ConsoleTarget(vm["uuid"], console["protocol"], host_console=bool(vm["is_control_domain"]))


# --- the host's own console --------------------------------------------------------------------
@dataclass(frozen=True)
class HostStatus:
    hostname: str
    uptime: float                  # seconds
    load: tuple[float, float, float]
    mem_total: int                 # bytes
    mem_available: int             # bytes
    running_vms: int
    now: _dt.datetime = field(default_factory=lambda: _dt.datetime.now().astimezone())


def _duration(seconds: float) -> str:
    minutes = int(seconds) // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return (f"{days} day{'s' if days != 1 else ''}, " if days else "") + f"{hours}:{minutes:02d}"


def format_host_status(status: HostStatus) -> list[str]:
    """The host console's lines (what the control domain's console shows)."""
    mib = 2**20
    used = status.mem_total - status.mem_available
    return [
        f"{status.hostname} - XCP host console",
        "",
        f"  time          {status.now:%Y-%m-%d %H:%M:%S %Z}",
        f"  uptime        {_duration(status.uptime)}",
        "  load average  " + ", ".join(f"{x:.2f}" for x in status.load),
        f"  memory        {used // mib} MiB used of {status.mem_total // mib} MiB"
        f" ({status.mem_available // mib} MiB available)",
        f"  running VMs   {status.running_vms}",
    ]


def _read_proc(proc: ProcReader) -> tuple[float, int, int]:
    """(uptime, MemTotal, MemAvailable in bytes); zeros where /proc lacks them."""
    uptime = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        uptime = proc.uptime()
    mem: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        mem = proc.meminfo()
    return uptime, mem.get("MemTotal", 0) * 1024, mem.get("MemAvailable", 0) * 1024


class HostConsole:
    """The control domain's console: RFB (TextConsoleServer) and vt100 on loopback, both
    showing `format_host_status` and refreshed every `refresh` seconds."""

    def __init__(self, store: Store, host_ref: str, *, version: tuple[int, int] = (3, 8),
                 refresh: float = HOST_REFRESH, executor: Executor | None = None,
                 socket_dir: Path | None = None) -> None:
        self.socket_dir = socket_dir      # None: loopback TCP ports
        self.store = store
        self.host_ref = host_ref
        self.refresh = refresh
        self.screen = TextScreen(80, 25, show_cursor=False)
        self.server = TextConsoleServer(self.screen, name=socket.gethostname(), version=version)
        self.vt100 = Vt100Server(self._vt100_picture, backlog=_VT100_BACKLOG)
        self.proc = ProcReader()
        self.executor = executor
        self._task: asyncio.Task | None = None
        self.lines: list[str] = []

    @property
    def rfb_address(self) -> Upstream | None:
        if self.server.path is not None:
            return self.server.path
        return ("127.0.0.1", self.server.port) if self.server.port else None

    @property
    def vt100_address(self) -> Upstream | None:
        return self.vt100.address

    async def start(self) -> None:
        await self.update()
        if self.socket_dir is None:
            await self.server.start("127.0.0.1", 0)
            await self.vt100.start("127.0.0.1", 0)
        else:
            await self.server.start(port=None, path=str(self.socket_dir / "host.rfb"))
            await self.vt100.start(path=str(self.socket_dir / "host.vt100"))
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.vt100.stop()
        await self.server.stop()

    def status(self, uptime: float, mem_total: int, mem_available: int) -> HostStatus:
        store, host_ref = self.store, self.host_ref
        host = store.find("host", host_ref)
        running = sum(1 for rec in store.all("VM").values()
                      if rec["power_state"] in _LIVE and not rec["is_control_domain"]
                      and rec["resident_on"] == host_ref)
        try:
            load = os.getloadavg()
        except OSError:
            load = (0.0, 0.0, 0.0)
        return HostStatus(hostname=(host or {}).get("hostname") or socket.gethostname(),
                          uptime=uptime, load=load, mem_total=mem_total,
                          mem_available=mem_available, running_vms=running)

    async def update(self) -> None:
        """Take a new picture of the host and show it to every viewer."""
        proc = await asyncio.get_running_loop().run_in_executor(self.executor, _read_proc,
                                                                self.proc)
        self.lines = format_host_status(self.status(*proc))
        self.screen.clear()
        self.server.write("\n".join(self.lines))
        self._send_vt100()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.update()
            except Exception:  # noqa: BLE001 - the console must keep refreshing
                log.exception("host console update failed")

    def _vt100_picture(self) -> bytes:
        return ("\x1b[H\x1b[2J" + "\r\n".join(self.lines) + "\r\n").encode()

    def _send_vt100(self) -> None:
        self.vt100.send(self._vt100_picture())


# --- the service ---------------------------------------------------------------------------------
class _VmConsoles:
    """What one VM has open: CONNECT tunnels, WebSocket bridges, and slots being opened."""

    __slots__ = ("tunnels", "bridges", "pending", "generation")

    def __init__(self) -> None:
        self.tunnels: set[Tunnel] = set()
        self.bridges: set[asyncio.Task] = set()
        self.pending = 0
        self.generation = 0          # bumped when the VM stops: an opening tunnel is then void

    @property
    def count(self) -> int:
        return len(self.tunnels) + len(self.bridges) + self.pending

    @property
    def idle(self) -> bool:
        return self.count == 0


_WS_RESPONSE = web.RequestKey("console_ws_response", web.WebSocketResponse)


class Consoles:
    """Console access for one agent; connected to `Lifecycle.vm_events` while the app runs."""

    def __init__(self, store: Store, host: ThisHost, domains: DomainBackend,
                 sessions: SessionManager, locations: Locations, *, vm_limit: int = 0,
                 idle_timeout: float = 0.0, rfb_version: tuple[int, int] = (3, 8),
                 executor: Executor | None = None, max_connections: int = 1 << 30,
                 until_close: Callable[[str, str], bool] | None = None,
                 socket_dir: Path | None = None) -> None:
        self.store = store
        self.host = host
        self.domains = domains
        self.sessions = sessions
        self.locations = locations
        self.vm_limit = vm_limit
        self.idle_timeout = idle_timeout if idle_timeout > 0 else None   # no key/pointer input
        # every connection of every listener meets this front end first (start_sites)
        self.front_end = ConnectFrontEnd(self.on_connect, max_connections=max_connections,
                                         until_close=until_close)
        self.host_console = HostConsole(store, host.host_ref, version=rfb_version,
                                        executor=executor, socket_dir=socket_dir)
        self._vms: dict[str, _VmConsoles] = {}

    # --- VMListener ------------------------------------------------------------------------
    def vm_running(self, uuid: str) -> None:
        pass

    def vm_stopped(self, uuid: str) -> None:
        self.close_vm(uuid)

    def vm_destroyed(self, uuid: str) -> None:
        self.close_vm(uuid)

    def close_vm(self, uuid: str, reason: str = "VM stopped") -> None:
        """Close every console connection of the VM (it stopped: its console is another's now)."""
        vm = self._vms.get(uuid)
        if vm is None:
            return
        vm.generation += 1
        for tunnel in list(vm.tunnels):
            tunnel.close(reason)
        for task in list(vm.bridges):
            task.cancel(reason)

    def open_count(self, uuid: str) -> int:
        vm = self._vms.get(uuid)
        return 0 if vm is None else vm.count

    # --- resolution ------------------------------------------------------------------------
    def resolve(self, query: Mapping[str, str]) -> ConsoleTarget | Refusal:
        return resolve_console(self.store, query, host_ref=self.host.host_ref,
                               base_url=self.locations.base_url())

    def upstream(self, target: ConsoleTarget) -> Upstream | None:
        """Where the console's server listens; None: no console server running (404)."""
        if target.host_console:
            source = self.host_console
            return {"rfb": source.rfb_address, "vt100": source.vt100_address}.get(target.protocol)
        dom = self.domains.get(target.vm_uuid)
        if dom is None:
            return None
        return {"rfb": dom.vnc_address, "vt100": dom.vt100_address}.get(target.protocol)

    def _reserve(self, uuid: str) -> _VmConsoles | None:
        vm = self._vms.setdefault(uuid, _VmConsoles())
        if self.vm_limit and vm.count >= self.vm_limit:
            return None
        vm.pending += 1
        return vm

    def _release(self, uuid: str, vm: _VmConsoles) -> None:
        vm.pending -= 1
        self._forget_if_idle(uuid, vm)

    def _forget_if_idle(self, uuid: str, vm: _VmConsoles) -> None:
        if vm.idle and self._vms.get(uuid) is vm:
            del self._vms[uuid]

    # --- CONNECT ---------------------------------------------------------------------------
    async def on_connect(self, client: ConnectClient) -> None:
        head = client.head
        if head.path != "/console":
            client.reject(404, message=f"nothing to CONNECT to at {head.path}")
            return
        sock = client.transport.get_extra_info("socket")
        creds = Credentials(cookie=head.cookies.get("session_id"),
                            query=head.query.get("session_id"),
                            authorization=head.header("Authorization") or "",
                            local=is_local_socket(sock),
                            source=str((client.peername or ("",))[0]))
        try:
            async with credentials_session(self.sessions, creds, REALM):
                decision = self.resolve(head.query)
        except web.HTTPUnauthorized:
            client.reject(401, realm=REALM)
            return
        if isinstance(decision, Refusal):
            client.reject(decision.status, message=decision.message, location=decision.location)
            return
        upstream = self.upstream(decision)
        if upstream is None:
            client.reject(404, message="no console server running")
            return
        vm = self._reserve(decision.vm_uuid)
        if vm is None:
            client.reject(503, message=f"console connection limit ({self.vm_limit}) reached")
            return
        generation = vm.generation
        try:
            # an RFB server speaks first: a 200 only once it did (a full listen queue accepts
            # connections nobody will serve)
            tunnel = await client.tunnel(upstream, idle_timeout=self.idle_timeout,
                                         server_speaks_first=decision.protocol == "rfb")
        except UpstreamBusy as exc:
            client.reject(503, message=str(exc))
            return
        except UpstreamUnavailable:
            client.reject(404, message="no console server running")
            return
        finally:
            self._release(decision.vm_uuid, vm)
        vm = self._vms.setdefault(decision.vm_uuid, vm)
        if vm.generation != generation:   # the VM stopped while we were connecting
            tunnel.close("VM stopped")
            self._forget_if_idle(decision.vm_uuid, vm)
            return
        vm.tunnels.add(tunnel)
        tunnel.add_done_callback(lambda t: self._tunnel_closed(decision.vm_uuid, vm, t))

    def _tunnel_closed(self, uuid: str, vm: _VmConsoles, tunnel: Tunnel) -> None:
        vm.tunnels.discard(tunnel)
        self._forget_if_idle(uuid, vm)

    # --- WebSocket -------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """GET /console?...: the same console over a WebSocket (noVNC and other browsers)."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=400, text="GET /console needs a WebSocket upgrade "
                                                 "(or use CONNECT)\n")
        async with http_session(request, REALM):
            decision = self.resolve(request.query)
        if isinstance(decision, Refusal):
            headers = {"Location": decision.location} if decision.location else None
            return web.Response(status=decision.status, text=decision.message + "\n",
                                headers=headers)
        upstream = self.upstream(decision)
        if upstream is None:
            return web.Response(status=404, text="no console server running\n")
        uuid = decision.vm_uuid
        vm = self._reserve(uuid)
        if vm is None:
            return web.Response(status=503, text=f"console connection limit ({self.vm_limit}) "
                                                 "reached\n")
        bridge = asyncio.get_running_loop().create_task(
            bridge_websocket(request, upstream, idle_timeout=self.idle_timeout,
                             openings=self.front_end.openings))
        vm.pending -= 1
        vm.bridges.add(bridge)
        try:
            return await asyncio.shield(bridge)
        except UpstreamBusy as exc:
            return web.Response(status=503, text=f"{exc}\n")
        except UpstreamUnavailable:
            return web.Response(status=404, text="no console server running\n")
        except asyncio.CancelledError:
            if not bridge.cancelled():      # this handler was cancelled (client gone, shutdown)
                bridge.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await bridge
                raise
            ws = request.get(_WS_RESPONSE)  # closed by us (VM stopped): the bridge closed it
            if ws is None:
                return web.Response(status=404, text="console closed\n")
            return ws
        finally:
            vm.bridges.discard(bridge)
            self._forget_if_idle(uuid, vm)

    # --- lifetime --------------------------------------------------------------------------
    async def on_shutdown(self, app: web.Application) -> None:
        for vm in list(self._vms.values()):
            for task in list(vm.bridges):
                task.cancel("agent shutting down")
        await self.front_end.shutdown()

    async def start(self) -> None:
        await self.host_console.start()

    async def stop(self) -> None:
        await self.host_console.stop()


async def _remember_ws(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: keep the console's WebSocketResponse so a handler whose bridge
    we cancelled can still return it."""
    if isinstance(response, web.WebSocketResponse) and request.path == "/console":
        request[_WS_RESPONSE] = response


CONSOLES: "web.AppKey[Consoles]" = web.AppKey("consoles", Consoles)


async def websocket(request: web.Request) -> web.StreamResponse:
    return await request.app[CONSOLES].websocket(request)


async def on_shutdown(app: web.Application) -> None:
    if CONSOLES in app:
        await app[CONSOLES].on_shutdown(app)


def setup(app: web.Application) -> None:
    """Routes and shutdown of the console service (the root builds `app[CONSOLES]`)."""
    app.router.add_get("/console", websocket)
    app.on_response_prepare.append(_remember_ws)
    app.on_shutdown.append(on_shutdown)


def front_end(app: web.Application) -> ConnectFrontEnd:
    """The front end every listener of `app` goes through (start_sites)."""
    return app[CONSOLES].front_end
