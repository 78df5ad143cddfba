"""The agent: every long-lived service of the daemon, wired once and started/stopped in order.

aiohttp handlers and API implementations reach everything through one `Agent` (an AppKey on the
application), so there is no module-global state and tests can run several agents side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import passwords
from .api import all_tables
from .bootstrap import ensure_host
from .config import Config
from .dispatch import Ctx, Dispatcher, run_soon
from .errors import XenAPIError
from .events import EventHub
from .implicit import implicit_table
from .lifecycle import Lifecycle
from .sessions import SessionManager
from .simulated import SimulatedBackend
from .store import Store
from .tasks import TaskManager
from .transfer import sweep_unfinished_imports
from .xtypes import NULL_REF

__all__ = ["Agent"]

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventHub(queue_size=config.event_queue_size)
        self.store = Store(str(config.db_path), self.events, synchronous=config.db_synchronous)
        self.dispatcher = Dispatcher(self)
        self.dispatcher.add_table(implicit_table())
        for table in all_tables():
            self.dispatcher.add_table(table)
        self.tasks = TaskManager(self)
        self.lifecycle = Lifecycle(self)
        self.vm_listeners: list = []          # lifecycle.VMListener: statistics, consoles
        self.stats = None                     # stats.Statistics, set while the app runs
        self.domains = SimulatedBackend(
            self.lifecycle.on_guest_event,
            rfb_version=tuple(int(n) for n in config.console_rfb_version.split(".")))
        self.sessions: SessionManager | None = None
        self.host_ref = NULL_REF
        self.pool_ref = NULL_REF
        self.first_password: str | None = None   # set only on the start that created it
        self.listen_urls: list[str] = []
        self._background: set[asyncio.Task] = set()

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        os_umask_private(cfg.data_dir)
        _, self.first_password = passwords.load_or_init(str(cfg.password_path), cfg.root_password)
        self.sessions = SessionManager(self, str(cfg.password_path), limit=cfg.session_limit,
                                       idle_timeout=cfg.session_idle_timeout,
                                       fail_delay=cfg.login_fail_delay)
        self.store.open()
        first_start = not self.store.all("host")
        ensure_host(self)
        self.tasks.recover_after_restart()
        sweep_unfinished_imports(Ctx(self, None))
        await self.store.sync()
        await self.lifecycle.restore_all()
        if first_start and cfg.demo:
            await self._create_demo()
        run_soon(self._janitor(), self._background)

    async def _create_demo(self) -> None:
        """A halted VM made the guide's way (clone + provision), for the README's examples."""
        ctx = Ctx(self, None)
        templates = [r for r, v in self.store.all("VM").items()
                     if v["name_label"] == "Debian Etch 4.0"]
        vm = await self.call(ctx, "VM.clone", templates[0], "demo")
        await self.call(ctx, "VM.provision", vm)
        net = next(iter(self.store.all("network")))
        await self.call(ctx, "VIF.create", {"VM": vm, "network": net, "device": "0"})

    async def call(self, ctx: Ctx, name: str, *args: Any) -> Any:
        """Run a message on the agent's own behalf (no session, types already right)."""
        msg, _ = self.dispatcher.lookup(name)
        return await self.dispatcher.invoke(ctx, msg, list(args))

    async def stop(self) -> None:
        for t in list(self._background):
            t.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.tasks.shutdown()
        await self.lifecycle.close()
        await self.lifecycle.save_all()
        await self.domains.close()
        self.events.wake()
        await self.store.close()

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(self.config.janitor_interval)
            try:
                self.housekeeping(time.time())
                await self.store.sync()
            except Exception:  # noqa: BLE001 - housekeeping must never stop
                log.exception("housekeeping failed")

    def housekeeping(self, now: float) -> None:
        self.sessions.gc(now)
        self.tasks.gc(now)

    # --- RPC -------------------------------------------------------------------------------
    async def rpc(self, method: str, params: list[Any], *, local: bool = False) -> Any:
        """Run one call; raises XenAPIError for anything the client should see."""
        try:
            return await self.dispatcher.call(method, params, local=local)
        except XenAPIError:
            raise
        except Exception as e:  # noqa: BLE001 - never a traceback on the wire
            log.exception("%s failed", method)
            raise XenAPIError("INTERNAL_ERROR", f"{type(e).__name__}: {e}") from None

    def set_root_password(self, new: str) -> None:
        passwords.write_hash(str(self.config.password_path), new)

    # --- derived facts ---------------------------------------------------------------------
    def base_url(self) -> str:
        """How clients reach this agent: HTTPS when we listen on it, like xapi's locations."""
        address = self.store.get("host", self.host_ref)["address"] if self.host_ref != NULL_REF \
            else "127.0.0.1"
        urls = [u for u in self.listen_urls if u.startswith("https://")] or \
            [u for u in self.listen_urls if u.startswith("http://")]
        if not urls:
            return f"http://{address}"
        scheme, _, rest = urls[0].partition("://")
        port = int(rest.rsplit(":", 1)[1])
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{address}" + ("" if port == default else f":{port}")

    async def on_listening(self, urls: list[str]) -> None:
        """Listeners are bound (ephemeral ports resolved): console locations can name them."""
        self.listen_urls = list(urls)
        with self.store.transaction():
            for ref, rec in self.store.all("console").items():
                key = f"ref={ref}" if rec["VM"] == self.dom0_ref else f"uuid={rec['uuid']}"
                self.store.update("console", ref, {"location": f"{self.base_url()}/console?{key}"})
        await self.store.sync()

    @property
    def dom0_ref(self) -> str:
        return self.store.get("host", self.host_ref)["control_domain"]

    def console_location(self, *, ref: str | None = None, uuid: str | None = None) -> str:
        query = f"ref={ref}" if ref else f"uuid={uuid}"
        return f"{self.base_url()}/console?{query}"


def os_umask_private(path) -> None:
    """The data directory holds the password hash and disks: owner-only."""
    try:
        path.chmod(0o700)
    except OSError:
        pass
