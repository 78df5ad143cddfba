"""The aiohttp application and its runner: routes, middleware, lifetimes, listeners.

`build_app` knows no sockets; `serve` runs it with one site per --listen, --https-listen and
--unix-socket. The agent is a cleanup_ctx resource: started before the first request, stopped
(tasks finished, database flushed) after the last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import ssl
import subprocess
from typing import AsyncIterator, Awaitable, Callable

from aiohttp import web

from console_proxy import ConnectTCPSite, ConnectUnixSite

from . import console_http, rpc, stats_http, transfer_http
from .agent import Agent
from .config import Config, parse_hostport
from .errors import XenAPIError, http_status
from .keys import AGENT

__all__ = ["build_app", "serve"]

log = logging.getLogger(__name__)

@web.middleware
async def errors_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                            ) -> web.StreamResponse:
    """HTTP handlers raise XenAPIError; here it becomes a status and a one-line body."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except XenAPIError as e:
        return web.Response(status=http_status(e), text=" ".join(e.description) + "\n",
                            headers={"X-XenAPI-Error": e.code})
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - logged, never a traceback to the client
        log.exception("%s %s failed", request.method, request.path)
        return web.Response(status=500, text="Internal error\n")


def build_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.max_rpc_body, middlewares=[errors_middleware])
    agent = Agent(config)
    app[AGENT] = agent

    async def agent_ctx(app: web.Application) -> AsyncIterator[None]:
        await agent.start()
        yield
        await agent.stop()

    app.cleanup_ctx.append(agent_ctx)
    app.add_routes(rpc.routes())
    app.add_routes(transfer_http.routes())
    stats_http.setup(app)   # /rrd_updates, /host_rrd, /vm_rrd, /sr_rrd; the statistics collector
    console_http.setup(app)   # GET /console (WebSocket), CONNECT front end, host console
    return app


def ensure_certificate(config: Config) -> ssl.SSLContext:
    """A self-signed certificate made at first start (openssl CLI: no extra Python dependency)."""
    if not (config.tls_cert.exists() and config.tls_key.exists()):
        name = socket.gethostname()
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
             "-keyout", str(config.tls_key), "-out", str(config.tls_cert), "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True)
        os.chmod(config.tls_key, 0o600)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return ctx


async def start_sites(runner: web.AppRunner, config: Config) -> list[str]:
    """Start one site per listener; returns the URLs actually bound (ephemeral ports resolved).

    Every site reads each connection's first bytes through the console front end, so
    `CONNECT /console?...` works on HTTP, HTTPS and the Unix socket alike; anything else reaches
    aiohttp unchanged."""
    front_end = console_http.front_end(runner.app)
    urls = []
    for spec in config.listen:
        host, port = parse_hostport(spec, 80)
        site = ConnectTCPSite(runner, host, port, front_end=front_end, reuse_address=True)
        await site.start()
        urls.append(_bound_url(site, "http"))
    if config.https_listen:
        ctx = ensure_certificate(config)
        for spec in config.https_listen:
            host, port = parse_hostport(spec, 443)
            site = ConnectTCPSite(runner, host, port, front_end=front_end, ssl_context=ctx,
                                  reuse_address=True)
            await site.start()
            urls.append(_bound_url(site, "https"))
    for path in config.unix_socket:
        if os.path.exists(path):
            os.unlink(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        site = ConnectUnixSite(runner, path, front_end=front_end)
        await site.start()
        os.chmod(path, 0o600)   # local logins are root: only root may connect
        urls.append(f"unix:{path}")
    return urls


def _bound_url(site: web.TCPSite, scheme: str) -> str:
    server = site._server   # aiohttp keeps the asyncio.Server here; no public accessor
    host, port = server.sockets[0].getsockname()[:2]
    return f"{scheme}://{host}:{port}"


def raise_fd_limit(ceiling: int = 1 << 16) -> int:
    """Every console viewer holds three descriptors (its socket, the tunnel's upstream, the
    console server's end): lift the soft limit to the hard one (up to `ceiling`), as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


async def serve(config: Config, *, announce: Callable[[str], None] = print) -> None:
    raise_fd_limit()
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        urls = await start_sites(runner, config)
        agent = app[AGENT]
        await agent.on_listening(urls)
        for url in urls:
            announce(f"xcp-httpd listening on {url}")
        if agent.first_password is not None:
            announce(f"root password (first start, shown once): {agent.first_password}")
        announce("ready")
        await stop.wait()
    finally:
        await runner.cleanup()
