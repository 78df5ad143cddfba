"""Method tables and the dispatcher: one path from a method name and raw params to a result.

Every message, implicit (derived from the datamodel) or explicit (written in `httpd/api/`),
is a `Message` with typed parameters. The dispatcher checks the parameter count, the session
and each parameter's type in that order, and runs the implementation inside the store's
durability barrier (a call that wrote answers only once the write is on disk). What a call
sees (`core.context.Ctx`) is built by the caller; the dispatcher only passes it on.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..model.errors import XenAPIError
from ..model.store import Store
from ..model.xtypes import XType

__all__ = ["Message", "MessageTable", "Dispatcher"]


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


Gate = Callable[[Message, "str | None"], None]
Forward = Callable[[Message, list], "Awaitable[Any] | None"]


class Dispatcher:
    """The method table of one agent; `check_session` raises SESSION_INVALID for a bad ref.
    `gate(msg, session)` may refuse a call before its session is checked (a pool's slave:
    HOST_IS_SLAVE); `forward(msg, args)` may hand a call to another agent (an awaitable of
    its result) instead of running it here."""

    def __init__(self, store: Store, check_session: Callable[[str], None],
                 tables: list[MessageTable], *, gate: Gate | None = None,
                 forward: Forward | None = None) -> None:
        self.store = store
        self.check_session = check_session
        self.gate = gate
        self.forward = forward
        self.methods: dict[str, Message] = {}
        self._aliases: dict[str, str] = {}
        for table in tables:   # later tables override earlier ones: explicit over implicit
            for msg in table.messages:
                self.methods[msg.name] = msg
                cls, _, method = msg.name.partition(".")
                self._aliases[f"{cls}_{method}"] = msg.name   # event_from: `from` is a keyword
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
        if self.gate is not None:
            self.gate(msg, session)
        if session is not None:
            self.check_session(session)
            params = params[1:]
        args = [xtype.check(value, pname) for (pname, xtype), value in zip(msg.params, params)]
        return session, args

    async def invoke(self, ctx: Any, msg: Message, args: list[Any]) -> Any:
        remote = self.forward(msg, args) if self.forward is not None else None
        if remote is not None:
            return await remote
        async with self.store.durable():
            result = msg.impl(ctx, *args)
            if msg.is_coroutine:
                result = await result
        return result

    def names(self) -> list[str]:
        return sorted(self.methods)
