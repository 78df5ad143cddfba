"""The services of one agent, frozen once started, and what a call sees of them (`Ctx`).

The composition root (`httpd.app`) builds `Services` after the database is open and this
host's records exist; nothing replaces a member later. A message implementation gets a `Ctx`:
the services, the caller's session, its task (for `Async.` calls and HTTP transfers) and
whether it came over the local socket.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, AsyncContextManager, Callable

from ..backends.base import DomainBackend
from ..config import Config
from ..model.events import EventHub
from ..model.store import Store
from ..stats.service import StatsService
from ..model.identity import ThisHost
from .dispatch import Dispatcher
from ..jobs import Executors, MetadataBudget
from .agentctl import AgentControl
from .lifecycle import Lifecycle
from .locations import Locations
from .operations import operation
from .peers import Peers
from .pool_role import PoolRole
from .sessions import SessionManager
from .tasks import TaskManager
from .vdis import Vdis

__all__ = ["Services", "Ctx"]


@dataclass(frozen=True)
class Services:
    config: Config
    store: Store
    events: EventHub
    host: ThisHost
    executors: Executors
    locations: Locations
    tasks: TaskManager
    sessions: SessionManager
    domains: DomainBackend
    vdis: Vdis
    lifecycle: Lifecycle
    stats: StatsService
    dispatcher: Dispatcher
    control: AgentControl
    metadata_budget: MetadataBudget
    pool: PoolRole
    peers: Peers


class Ctx:
    """What an implementation sees: the services, the caller's session, its task if any."""

    __slots__ = ("services", "session", "task", "local", "source")

    def __init__(self, services: Services, session: str | None, task: str | None = None,
                 local: bool = False, source: str = "") -> None:
        self.services = services
        self.session = session
        self.task = task
        self.local = local
        self.source = source        # the client's address (logins are slowed per source)

    def for_task(self, task: str) -> "Ctx":
        return Ctx(self.services, self.session, task, self.local, self.source)

    @property
    def store(self) -> Store:
        return self.services.store

    @property
    def tasks(self) -> TaskManager:
        return self.services.tasks

    @property
    def vdis(self) -> Vdis:
        return self.services.vdis

    @property
    def lifecycle(self) -> Lifecycle:
        return self.services.lifecycle

    @property
    def host(self) -> ThisHost:
        return self.services.host

    def raise_if_cancelled(self) -> None:
        if self.task is not None:
            self.services.tasks.raise_if_cancelled(self.task)

    def progress(self, value: float) -> None:
        if self.task is not None:
            self.services.tasks.set_progress(self.task, value)

    async def blocking(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run short blocking file work on the disk pool (never on the loop)."""
        return await self._on(self.services.executors.disk, fn, args, kwargs)

    async def streaming(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one step of an import's or export's byte stream on the transfer pool."""
        return await self._on(self.services.executors.transfer, fn, args, kwargs)

    @staticmethod
    async def _on(pool: Executor, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        return await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(fn, *args, **kwargs))

    def operation(self, cls: str, ref: str, op: str) -> AsyncContextManager[str]:
        """Hold `ref`'s lock for `op` while the block runs (keyed by this call's task)."""
        return operation(self.services.store, cls, ref, op, self.task)
