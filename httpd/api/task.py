"""task.*: client-created tasks (for HTTP transfers) and cancellation."""

from __future__ import annotations

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.xtypes import STRING, Ref

table = MessageTable()


@table.message("task.create", ("label", STRING), ("description", STRING), async_ok=False)
def create(ctx: Ctx, label: str, description: str) -> str:
    return ctx.tasks.create(label, description, session=ctx.session)


@table.message("task.cancel", ("task", Ref("task")))
def cancel(ctx: Ctx, ref: str) -> str:
    ctx.tasks.cancel(ref)
    return ""


@table.message("task.destroy", ("self", Ref("task")), async_ok=False)
def destroy(ctx: Ctx, ref: str) -> str:
    ctx.store.get("task", ref)
    ctx.tasks.destroy(ref)
    return ""
