"""Running the application: one listener per --listen, --https-listen and --unix-socket,
signals, and start-up failures reported in one line.

Every listener reads each connection's first bytes through the console front end, so
`CONNECT /console?...` works on HTTP, HTTPS and the Unix socket alike; anything else reaches
aiohttp unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shlex
import signal
import socket
import ssl
import subprocess
import sys
from concurrent.futures import Executor
from typing import Callable, Iterator

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from console_proxy.frontend import Listeners, RefusalLog

from .app import FIRST_PASSWORD, build_app
from .config import Config, parse_hostport
from .datadir import DataDirInUse
from .web.access import ACCESS_LOGGER, AccessLog
from .web.console import front_end
from .web.appkeys import SERVICES

__all__ = ["serve", "start_sites", "StartupFailed"]

log = logging.getLogger(__name__)


class StartupFailed(Exception):
    """The agent could not start; the message is the one line to show."""


def _make_certificate(config: Config) -> None:
    """A self-signed certificate made at first start (openssl CLI: no extra Python dependency)."""
    name = socket.gethostname()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-keyout", str(config.tls_key), "-out", str(config.tls_cert), "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    os.chmod(config.tls_key, 0o600)


async def tls_context(config: Config, executor: Executor | None = None) -> ssl.SSLContext:
    if not (config.tls_cert.exists() and config.tls_key.exists()):
        await asyncio.get_running_loop().run_in_executor(executor, _make_certificate, config)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return ctx


async def start_sites(listeners: Listeners, app: web.Application, config: Config) -> list[str]:
    """Listen as `config` says; returns the URLs bound (ephemeral ports resolved) and tells
    the services (console locations name them)."""
    urls = []
    for spec in config.listen:
        with _listening(spec):
            host, port = await listeners.tcp(*parse_hostport(spec, 80))
        urls.append(f"http://{host}:{port}")
    if config.https_listen:
        ctx = await tls_context(config, app[SERVICES].executors.disk)
        for spec in config.https_listen:
            with _listening(spec):
                host, port = await listeners.tcp(*parse_hostport(spec, 443), ssl=ctx)
            urls.append(f"https://{host}:{port}")
    for path in config.unix_socket:
        with _listening(path):
            if os.path.exists(path):
                os.unlink(path)
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            await listeners.unix(path)
        os.chmod(path, 0o600)   # local logins are root: only root may connect
        urls.append(f"unix:{path}")
    services = app[SERVICES]
    services.locations.bind(urls)
    services.pool.beat()            # the pool's other agents reach this one from now on
    await services.store.sync()
    return urls


@contextlib.contextmanager
def _listening(where: str) -> Iterator[None]:
    """An address that cannot be bound is one line naming it: `cannot listen on
    127.0.0.1:8080: address already in use`."""
    try:
        yield
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise StartupFailed(f"cannot listen on {where}: {reason}") from e


class BadRequestLogFilter(logging.Filter):
    """aiohttp logs each malformed request (a bad head, an oversized line) at ERROR with its
    traceback: ~750 bytes a request, so a flood of them floods the log. Such a record becomes
    a refusal line of `refusals` instead: one a second at most, saying how many it stood for."""

    def __init__(self, refusals: RefusalLog) -> None:
        super().__init__()
        self.refusals = refusals

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.refusals.refused("malformed", "refused a malformed request: %s",
                              str(exc).replace("\n", " ").strip()[:200])
        return False


def _accept_errors(refusals: RefusalLog) -> Callable[[asyncio.AbstractEventLoop, dict], None]:
    """asyncio logs a traceback for each accept() that fails for lack of descriptors (and
    retries a second later): that becomes a refusal line, one a second at most."""
    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if "socket.accept() out of system resource" not in context.get("message", ""):
            loop.default_exception_handler(context)
            return
        refusals.refused("accept", "cannot accept connections: %s", context.get("exception"))
    return handle


def raise_fd_limit(ceiling: int = 1 << 16) -> int:
    """Every console viewer holds three descriptors (its socket, the tunnel's upstream, the
    console server's end): lift the soft limit to the hard one (up to `ceiling`), as servers do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    return soft


async def serve(config: Config, *, announce: Callable[[str], None] = print) -> str | None:
    """Run until SIGINT/SIGTERM (returns None) or a host.* message asks the agent to stop
    (returns its `AgentControl` action, for `after_stop`); StartupFailed (everything started
    already stopped again)."""
    raise_fd_limit()
    refusals = RefusalLog(log)
    bad_requests = BadRequestLogFilter(refusals)
    logging.getLogger("aiohttp.server").addFilter(bad_requests)
    app = build_app(config)
    # handler_cancellation: a handler ends when its client goes away (an abandoned long poll,
    # an export nobody reads); RPC calls shield themselves and run to their end (web.rpc)
    runner = web.AppRunner(app, handle_signals=False, access_log=ACCESS_LOGGER,
                           access_log_class=AccessLog, shutdown_timeout=5.0,
                           handler_cancellation=True, keepalive_timeout=15.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_accept_errors(refusals))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await runner.setup()
        except DataDirInUse as e:
            raise StartupFailed(str(e)) from e
        except Exception as e:  # noqa: BLE001 - said in one line; the services unwound
            raise StartupFailed(f"cannot start on {config.data_dir}: {_reason(e)}") from e
        async with Listeners(runner, front_end(app)) as listeners:
            urls = await start_sites(listeners, app, config)
            for url in urls:
                announce(f"xcp-httpd listening on {url}")
            if app[FIRST_PASSWORD] is not None:
                announce(f"root password (first start, shown once): {app[FIRST_PASSWORD]}")
            announce("ready")
            control = app[SERVICES].control
            signalled = asyncio.ensure_future(stop.wait())
            asked = asyncio.ensure_future(control.wait())
            await asyncio.wait((signalled, asked), return_when=asyncio.FIRST_COMPLETED)
            signalled.cancel()
            asked.cancel()
            if control.action is not None:
                log.warning("stopping: %s asked by the API", control.action)
            return control.action
    finally:
        await runner.cleanup()
        logging.getLogger("aiohttp.server").removeFilter(bad_requests)


def after_stop(action: str | None, config: Config) -> int:
    """Once the agent stopped: exec it again (restart, or reboot with no power command), run
    the host power command, or just exit. Returns the exit status when it returns."""
    if action in ("reboot", "poweroff") and config.host_power_command:
        cmd = [*shlex.split(config.host_power_command), action]
        log.warning("running %s", shlex.join(cmd))
        return subprocess.run(cmd, check=False).returncode
    if action in ("restart", "reboot"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    return 0


def _reason(e: BaseException) -> str:
    """One line, whatever the exception's text (libpq's run over several)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"
