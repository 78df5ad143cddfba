"""message.* as xapi has them: create (about an existing object), destroy, destroy_many, and
the queries get (one object's messages since a time) and get_since. Listing and the records
are the implicit messages; the agent posts its own through httpd.core.messages."""

from __future__ import annotations

import datetime as _dt

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..core.messages import post
from ..model.datamodel import MESSAGE_CLS
from ..model.xtypes import DATETIME, INT, STRING, Ref, SetOf

table = MessageTable()

__all__ = ["table"]


@table.message("message.create", ("name", STRING), ("priority", INT), ("cls", MESSAGE_CLS),
               ("obj_uuid", STRING), ("body", STRING))
def message_create(ctx: Ctx, name: str, priority: int, cls: str, obj_uuid: str,
                   body: str) -> str:
    with ctx.store.transaction():
        return post(ctx.store, name, priority, cls, obj_uuid, body)


@table.message("message.destroy", ("self", Ref("message")))
def message_destroy(ctx: Ctx, ref: str) -> str:
    ctx.store.get("message", ref)
    with ctx.store.transaction():
        ctx.store.destroy("message", ref)
    return ""


@table.message("message.destroy_many", ("messages", SetOf(Ref("message"))))
def message_destroy_many(ctx: Ctx, refs: list[str]) -> str:
    for ref in refs:                      # every one checked before any goes
        ctx.store.get("message", ref)
    with ctx.store.transaction():
        for ref in dict.fromkeys(refs):
            ctx.store.destroy("message", ref)
    return ""


def _since(ctx: Ctx, since: _dt.datetime, keep=lambda rec: True) -> dict:
    return {ref: rec for ref, rec in ctx.store.all("message").items()
            if rec["timestamp"] > since and keep(rec)}


@table.message("message.get", ("cls", MESSAGE_CLS), ("obj_uuid", STRING), ("since", DATETIME))
def message_get(ctx: Ctx, cls: str, obj_uuid: str, since: _dt.datetime) -> dict:
    """The messages about one object, newer than `since`."""
    return _since(ctx, since, lambda rec: rec["cls"] == cls and rec["obj_uuid"] == obj_uuid)


@table.message("message.get_since", ("since", DATETIME))
def message_get_since(ctx: Ctx, since: _dt.datetime) -> dict:
    return _since(ctx, since)
