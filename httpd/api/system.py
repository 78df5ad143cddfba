"""system.*: XML-RPC introspection."""

from __future__ import annotations

from ..dispatch import Ctx, MessageTable

table = MessageTable()


@table.message("system.listMethods", session=False, async_ok=False)
def list_methods(ctx: Ctx) -> list[str]:
    return ctx.agent.dispatcher.names()
