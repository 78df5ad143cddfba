"""The composition root: the services of one agent, built and started in order, and the
aiohttp application around them.

`open_services` is the only place that knows every service. It builds each with what it uses,
starts them in dependency order and, on the way out (or when start-up fails half-way), stops
them in reverse through one `AsyncExitStack`, so no thread or task outlives a failed start.
`build_app` knows no sockets: routes, middleware and the one cleanup_ctx that holds the
services; `httpd.runner` runs it on its sites.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from .api import all_tables
from .backends.base import DomainBackend
from .backends.qemu.backend import QemuBackend, qemu_installed
from .backends.simulated import SimulatedBackend
from .config import Config
from .core.agentctl import AgentControl
from .core.bootstrap import ensure_host
from .core.calls import call_internal
from .core.context import Services
from .core.dispatch import Dispatcher
from .core.forwarding import Forwarder
from .core.implicit import implicit_table
from .jobs import Executors, Jobs, MetadataBudget
from .core.lifecycle import Lifecycle
from .core.locations import Locations
from .core import membership
from .core.peers import Peers
from .core.pool_role import PoolRole
from .core.passwords import load_or_init
from .core.sessions import SessionManager
from .core.tasks import TaskManager
from .core.vdis import Vdis
from .datadir import lock_data_dir
from .model.engines import engine_for
from .model.events import EventHub
from .model.store import Store
from .stats.service import StatsService
from .transfer.importer import sweep_unfinished
from .web import console, rpc, stats, transfer, ui
from .web.console import CONSOLES, Consoles
from .web.errors import errors_middleware
from .web.tasks import tasks_middleware
from .web.appkeys import SERVICES

__all__ = ["build_app", "open_services", "FIRST_PASSWORD"]

log = logging.getLogger(__name__)

# root's clear password on the start that created it (shown once), else None
FIRST_PASSWORD: "web.AppKey[str | None]" = web.AppKey("first_password", str)


@contextlib.asynccontextmanager
async def open_services(config: Config) -> AsyncIterator[tuple[Services, Consoles, str | None]]:
    """Every long-lived service, started in order; stopped in reverse on exit or failure."""
    async with contextlib.AsyncExitStack() as stack:
        executors = Executors.create()
        stack.callback(executors.shutdown)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.data_dir.chmod(0o700)      # the password hash and the disks: owner only
        stack.callback(lock_data_dir(config.data_dir).close)   # one agent per data directory
        _, first_password = load_or_init(str(config.password_path), config.root_password)

        events = EventHub(queue_size=config.event_queue_size)
        stack.callback(events.close)
        # pool.json's database for a pool's host (a join or ejection cut short resolved)
        database = membership.resolve_database(config)
        store = Store(engine_for(database, str(config.db_path),
                                 synchronous=config.db_synchronous), events)
        store.open()
        stack.push_async_callback(store.close)
        first_start = not store.all("host")
        host = ensure_host(store, config, database)
        tasks = TaskManager(store, host.host_ref)
        tasks.recover_after_restart()
        sessions = SessionManager(store, events, host.host_ref, str(config.password_path),
                                  executor=executors.passwords, limit=config.session_limit,
                                  idle_timeout=config.session_idle_timeout,
                                  fail_delay=config.login_fail_delay)
        locations = Locations(store, host)
        vdis = Vdis(store, host, executors.disk)
        await sweep_unfinished(store, vdis, host.host_ref)
        await vdis.sweep_side_files()
        await store.sync()

        lifecycle: Lifecycle | None = None

        def on_guest_event(event) -> None:       # the backend reports, the lifecycle acts
            assert lifecycle is not None
            lifecycle.on_guest_event(event)

        # consoles listen on Unix sockets of mode 0600 in a private directory (mkdtemp: 0700,
        # short enough for a socket path), so no other local user reaches a guest's screen
        socket_dir = Path(tempfile.mkdtemp(prefix="xcp-consoles-"))
        stack.callback(shutil.rmtree, socket_dir, True)
        domains = await _open_backend(config, on_guest_event, executors, socket_dir)
        stack.push_async_callback(domains.close)
        lifecycle = Lifecycle(store, host, locations, vdis, domains, config.data_dir / "domains",
                              executor=executors.disk)
        stack.push_async_callback(lifecycle.save_all)
        stack.push_async_callback(lifecycle.close)
        stack.push_async_callback(tasks.shutdown)
        statistics = StatsService(store, host, domains, config.data_dir / "rrd",
                                  interval=config.stats_interval,
                                  save_interval=config.stats_save_interval,
                                  executor=executors.stats)
        role = PoolRole(store, host, locations, lifecycle, database=database,
                        shared=store.engine.shared)
        peers = Peers(store, host, membership.pool_secret(config.data_dir), locations.base_url)
        stack.push_async_callback(peers.close)
        dispatcher = Dispatcher(store, sessions.check, [implicit_table(), *all_tables()],
                                gate=role.gate,
                                forward=Forwarder(store, host, peers, executors.disk))
        services = Services(config=config, store=store, events=events, host=host,
                            executors=executors, locations=locations, tasks=tasks,
                            sessions=sessions, domains=domains, vdis=vdis, lifecycle=lifecycle,
                            stats=statistics, dispatcher=dispatcher,
                            control=AgentControl(), metadata_budget=MetadataBudget(),
                            pool=role, peers=peers)

        await lifecycle.restore_all()
        stack.push_async_callback(role.stop)
        await role.start(store.engine.lease)
        if first_start and config.demo:
            await _create_demo(services)
        housekeeping = Jobs()
        housekeeping.spawn(_janitor(services))
        stack.push_async_callback(housekeeping.close)

        await statistics.start()
        stack.push_async_callback(statistics.stop)
        lifecycle.vm_events.connect(statistics)
        stack.callback(lifecycle.vm_events.disconnect, statistics)

        consoles = Consoles(store, host, domains, sessions, locations,
                            vm_limit=config.console_vm_limit,
                            idle_timeout=config.console_idle_timeout,
                            rfb_version=config.rfb_version, executor=executors.stats,
                            max_connections=config.connection_limit(),
                            until_close=transfer.framed_by_close, socket_dir=socket_dir)
        await consoles.start()
        stack.push_async_callback(consoles.stop)
        lifecycle.vm_events.connect(consoles)
        stack.callback(lifecycle.vm_events.disconnect, consoles)
        yield services, consoles, first_password


async def _open_backend(config: Config, on_guest_event, executors: Executors,
                        socket_dir: Path) -> DomainBackend:
    """The domain backend `config.backend` names ("auto": QEMU when it is installed)."""
    choice = config.backend
    if choice == "auto":
        choice = "qemu" if qemu_installed() else "simulated"
        log.warning("domain backend: %s (%s)", choice, "qemu-system-x86_64 found"
                    if choice == "qemu" else "qemu-system-x86_64 is not installed")
    if choice == "qemu":
        backend = QemuBackend(on_guest_event, data_dir=config.data_dir, socket_dir=socket_dir,
                              accel=config.accel, executor=executors.disk,
                              clean_timeout=config.clean_shutdown_timeout,
                              network=config.guest_network)
        await backend.open()
        return backend
    return SimulatedBackend(on_guest_event, rfb_version=config.rfb_version,
                            executor=executors.disk, socket_dir=socket_dir)


async def _create_demo(services: Services) -> None:
    """A halted VM made the guide's way (clone + provision), for the README's examples."""
    templates = [r for r, v in services.store.all("VM").items()
                 if v["name_label"] == "Debian Etch 4.0"]
    vm = await call_internal(services, "VM.clone", templates[0], "demo")
    await call_internal(services, "VM.provision", vm)
    net = next(iter(services.store.all("network")))
    await call_internal(services, "VIF.create", {"VM": vm, "network": net, "device": "0"})


async def _janitor(services: Services) -> None:
    while True:
        await asyncio.sleep(services.config.janitor_interval)
        try:
            now = time.time()
            if services.pool.is_master:       # the pool's sessions and tasks: the master's
                services.sessions.gc(now)
                services.tasks.gc(now)
            services.lifecycle.persist_running()
            await services.store.sync()
        except Exception:  # noqa: BLE001 - housekeeping must never stop
            log.exception("housekeeping failed")


async def _services_ctx(config: Config, app: web.Application) -> AsyncIterator[None]:
    async with open_services(config) as (services, consoles, first_password):
        app[SERVICES] = services
        app[CONSOLES] = consoles
        app[FIRST_PASSWORD] = first_password
        yield


async def _answer_blocked_event_calls(app: web.Application) -> None:
    """on_shutdown: event.from / event.next waiting for changes answer now, so shutdown does
    not wait for their timeouts."""
    if SERVICES in app:
        app[SERVICES].events.close()


def build_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.max_rpc_body,
                          middlewares=[tasks_middleware, errors_middleware])
    app.cleanup_ctx.append(partial(_services_ctx, config))
    app.on_shutdown.append(_answer_blocked_event_calls)
    app.add_routes(rpc.routes())
    app.add_routes(transfer.routes())
    app.add_routes(stats.routes())
    console.setup(app)        # GET /console (WebSocket); the CONNECT front end is on every site
    ui.setup(app)             # the web page at /
    return app
