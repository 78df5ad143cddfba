"""Method tables and the dispatcher: one path from a method name and raw params to a result.

Every message, implicit (derived from the datamodel) or explicit (written in `httpd/api/`),
is a `Message` with typed parameters. The dispatcher checks the parameter count, the session
and each parameter's type in that order, runs the implementation (or, for `Async.` calls, a
task that runs it) and, if the call wrote anything, waits for the write to be durable before
returning — the one place where "durable before the reply" is enforced.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .errors import XenAPIError
from .store import WROTE
from .xtypes import XType

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["Message", "MessageTable", "Ctx", "Dispatcher"]


@dataclass(frozen=True)
class Message:
    name: str                                  # "VM.get_record"
    params: tuple[tuple[str, XType], ...]      # after the session
    impl: Callable[..., Any]
    session: bool = True
    async_ok: bool = False
    doc: str = ""
    optional: int = 0                          # trailing params a caller may leave out
    is_coroutine: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_coroutine", inspect.iscoroutinefunction(self.impl))

    @property
    def arity(self) -> int:
        return len(self.params) + (1 if self.session else 0)


class MessageTable:
    """A set of messages, filled by decorators in the api modules (like aiohttp's RouteTableDef)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def add(self, msg: Message) -> None:
        self.messages.append(msg)

    def message(self, name: str, *params: tuple[str, XType], session: bool = True,
                async_ok: bool = True, optional: int = 0) -> Callable[[Callable], Callable]:
        def register(impl: Callable) -> Callable:
            self.add(Message(name, tuple(params), impl, session, async_ok,
                             (impl.__doc__ or "").strip(), optional))
            return impl
        return register


class Ctx:
    """What an implementation sees: the agent, the caller's session, its task if any."""

    __slots__ = ("agent", "session", "task", "local")

    def __init__(self, agent: "Agent", session: str | None, task: str | None = None,
                 local: bool = False) -> None:
        self.agent = agent
        self.session = session
        self.task = task
        self.local = local

    @property
    def store(self):
        return self.agent.store

    def raise_if_cancelled(self) -> None:
        if self.task is not None:
            self.agent.tasks.raise_if_cancelled(self.task)

    def progress(self, value: float) -> None:
        if self.task is not None:
            self.agent.tasks.set_progress(self.task, value)

    async def cancellable(self, aw: Any) -> Any:
        """Await `aw` unless the task is cancelled first (then TASK_CANCELLED)."""
        if self.task is None:
            return await aw
        return await self.agent.tasks.race_cancel(self.task, aw)


class Dispatcher:
    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self.methods: dict[str, Message] = {}
        self._aliases: dict[str, str] = {}

    def add_table(self, table: MessageTable) -> None:
        """Later tables override earlier ones: explicit messages replace implicit defaults."""
        for msg in table.messages:
            self.methods[msg.name] = msg
            cls, _, method = msg.name.partition(".")
            self._aliases[f"{cls}_{method}"] = msg.name      # event_from: `from` is a keyword
            self._aliases[msg.name.lower()] = msg.name

    def lookup(self, name: str) -> tuple[Message, bool]:
        is_async = name.startswith("Async.")
        bare = name[6:] if is_async else name
        msg = self.methods.get(bare)
        if msg is None:
            real = self._aliases.get(bare) or self._aliases.get(bare.lower())
            msg = self.methods.get(real) if real else None
        if msg is None or (is_async and not msg.async_ok):
            raise XenAPIError("MESSAGE_METHOD_UNKNOWN", name)
        return msg, is_async

    def bind(self, msg: Message, name: str, params: list[Any]) -> tuple[str | None, list[Any]]:
        if not msg.arity - msg.optional <= len(params) <= msg.arity:
            raise XenAPIError("MESSAGE_PARAMETER_COUNT_MISMATCH", name, msg.arity, len(params))
        session = None
        if msg.session:
            session = params[0]
            if not isinstance(session, str):
                raise XenAPIError("SESSION_INVALID", session)
            self.agent.sessions.check(session)
            params = params[1:]
        args = [xtype.check(value, pname) for (pname, xtype), value in zip(msg.params, params)]
        return session, args

    async def call(self, name: str, params: list[Any], *, local: bool = False) -> Any:
        msg, is_async = self.lookup(name)
        session, args = self.bind(msg, name, params)
        ctx = Ctx(self.agent, session, None, local)
        if is_async:
            return self.agent.tasks.spawn(ctx, msg, args)
        return await self.invoke(ctx, msg, args)

    async def invoke(self, ctx: Ctx, msg: Message, args: list[Any]) -> Any:
        token = WROTE.set(False)
        try:
            result = msg.impl(ctx, *args)
            if msg.is_coroutine:
                result = await result
            if WROTE.get():
                await self.agent.store.sync()
        finally:
            WROTE.reset(token)
        return result

    def names(self) -> list[str]:
        return sorted(self.methods)


def run_soon(coro: Any, keep: set) -> asyncio.Task:
    """A background task whose reference is kept until it ends (no fire-and-forget)."""
    t = asyncio.get_running_loop().create_task(coro)
    keep.add(t)
    t.add_done_callback(keep.discard)
    return t
