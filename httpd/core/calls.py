"""One call from a client (or the agent itself) to a message: lookup, checks, run or spawn.

The one place an unexpected exception becomes INTERNAL_ERROR for an RPC (logged here).
"""

from __future__ import annotations

import logging
from typing import Any

from ..model.errors import XenAPIError, internal_error
from .context import Ctx, Services

__all__ = ["call", "call_internal"]

log = logging.getLogger(__name__)


async def call(services: Services, method: str, params: list[Any], *,
               local: bool = False, source: str = "") -> Any:
    """Run one call; raises XenAPIError for anything the client should see."""
    dispatcher = services.dispatcher
    try:
        msg, is_async = dispatcher.lookup(method)
        session, args = dispatcher.bind(msg, method, params)
        ctx = Ctx(services, session, None, local, source)
        if session is not None and services.sessions.from_peer(session):
            # a call another agent hands over: what it (or any agent) committed before
            # sending it is read here, not a cache a change or two behind
            await services.store.fence(services.executors.disk)
        if is_async:
            return services.tasks.spawn(
                f"Async.{msg.name}", session,
                lambda task: dispatcher.invoke(ctx.for_task(task), msg, args))
        return await dispatcher.invoke(ctx, msg, args)
    except XenAPIError:
        raise
    except Exception as e:  # noqa: BLE001 - never a traceback on the wire
        log.exception("%s failed", method)
        raise internal_error(e) from None


async def call_internal(services: Services, name: str, *args: Any) -> Any:
    """Run a message on the agent's own behalf (no session, types already right)."""
    msg, _ = services.dispatcher.lookup(name)
    return await services.dispatcher.invoke(Ctx(services, None), msg, list(args))
