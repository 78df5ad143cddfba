"""task.*: client-created tasks (for HTTP transfers), their progress and status, cancellation."""

from __future__ import annotations

import math

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.datamodel import TASK_STATUS
from ..model.errors import XenAPIError
from ..model.xtypes import FLOAT, STRING, Ref

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


@table.message("task.set_progress", ("self", Ref("task")), ("value", FLOAT), async_ok=False)
def set_progress(ctx: Ctx, ref: str, value: float) -> str:
    ctx.store.get("task", ref)
    if not math.isfinite(value):                 # JSON-RPC's parser takes NaN and Infinity
        raise XenAPIError("INVALID_VALUE", "value", str(value))
    ctx.tasks.set_progress(ref, value)
    return ""


@table.message("task.set_status", ("self", Ref("task")), ("value", TASK_STATUS), async_ok=False)
def set_status(ctx: Ctx, ref: str, value: str) -> str:
    ctx.tasks.set_status(ref, value)
    return ""
