"""The agent in the test's own process (build_app + start_sites on real loopback sockets), for
tests that need a Config knob, a record the API cannot make (a second host) or the agent's own
bookkeeping. Everything else runs the daemon as a subprocess (tests.server)."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from aiohttp import web

from console_proxy.frontend import Listeners

from httpd.app import build_app
from httpd.config import Config
from httpd.runner import start_sites
from httpd.web.console import front_end

__all__ = ["PASSWORD", "running_agent"]

PASSWORD = "in-process"


@contextlib.asynccontextmanager
async def running_agent(tmp_path, **knobs) -> AsyncIterator[tuple[web.Application, list[str]]]:
    """The agent on HTTP, HTTPS and a Unix socket; yields (app, listener URLs)."""
    config = Config(data_dir=tmp_path / "data", listen=("127.0.0.1:0",),
                    https_listen=("127.0.0.1:0",), unix_socket=(str(tmp_path / "xapi.sock"),),
                    root_password=PASSWORD, login_fail_delay=0.01, demo=False, **knobs)
    app = build_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        async with Listeners(runner, front_end(app)) as listeners:
            urls = await start_sites(listeners, app, config)
            yield app, urls
    finally:
        await runner.cleanup()
