"""system.*: XML-RPC introspection."""

from __future__ import annotations

from ..core.context import Ctx
from ..core.dispatch import MessageTable

table = MessageTable()


@table.message("system.listMethods", session=False, async_ok=False)
def list_methods(ctx: Ctx) -> list[str]:
    return ctx.services.dispatcher.names()
