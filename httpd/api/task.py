"""task.*: client-created tasks (for HTTP transfers) and cancellation."""

from __future__ import annotations

from ..dispatch import Ctx, MessageTable
from ..xtypes import STRING, Ref

table = MessageTable()


@table.message("task.create", ("label", STRING), ("description", STRING), async_ok=False)
def create(ctx: Ctx, label: str, description: str) -> str:
    return ctx.agent.tasks.create(label, description, session=ctx.session)


@table.message("task.cancel", ("task", Ref("task")))
def cancel(ctx: Ctx, ref: str) -> str:
    ctx.agent.tasks.cancel(ref)
    return ""


@table.message("task.destroy", ("self", Ref("task")), async_ok=False)
def destroy(ctx: Ctx, ref: str) -> str:
    ctx.store.get("task", ref)
    ctx.agent.tasks.destroy(ref)
    return ""
