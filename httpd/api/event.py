"""event.*: the guide's register/next loop and the coalescing event.from."""

from __future__ import annotations

import asyncio
import time

from ..model.datamodel import CLASSES, class_spec
from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..core.implicit import visible
from ..model.errors import XenAPIError
from ..model.events import Subscription
from ..model.xtypes import FLOAT, STRING, SetOf

table = MessageTable()
_CLASSES = SetOf(STRING)


def _record(cls: str, op: str, ref: str, eid: int, snapshot: dict | None) -> dict:
    ev = {"id": eid, "timestamp": f"{time.time():.6f}", "class": CLASSES[cls].event_class,
          "operation": op, "ref": ref}
    if snapshot is not None:
        ev["snapshot"] = snapshot
    return ev


def _check_session(ctx: Ctx) -> None:
    if not ctx.services.sessions.valid(ctx.session):
        raise XenAPIError("SESSION_INVALID", ctx.session)


@table.message("event.register", ("classes", _CLASSES), async_ok=False)
def register(ctx: Ctx, classes: list[str]) -> str:
    ctx.services.events.register(ctx.session, Subscription(classes))
    return ""


@table.message("event.unregister", ("classes", _CLASSES), async_ok=False)
def unregister(ctx: Ctx, classes: list[str]) -> str:
    ctx.services.events.unregister(ctx.session, Subscription(classes))
    return ""


@table.message("event.next", async_ok=False)
async def next_(ctx: Ctx) -> list[dict]:
    hub = ctx.services.events
    while True:
        _check_session(ctx)
        changes = hub.take_next(ctx.session)
        if changes or hub.closed:
            return [_record(c.cls, c.op, c.ref, c.id, c.snapshot) for c in changes
                    if visible(ctx, c.cls, c.ref)]
        await hub.wait(None)


@table.message("event.from", ("classes", _CLASSES), ("token", STRING), ("timeout", FLOAT),
               async_ok=False)
async def from_(ctx: Ctx, classes: list[str], token: str, timeout: float) -> dict:
    hub, store = ctx.services.events, ctx.store
    sub = Subscription(classes)
    since = hub.parse_token(token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, min(timeout, 24 * 3600.0))
    while True:
        _check_session(ctx)
        if since is None or hub.is_stale(since):
            # No usable token: every object the subscription covers, as an add.
            events = [_record(cls, "add", ref, hub.last_id, rec)
                      for cls in sorted(sub.class_names())
                      for ref, rec in store.all(cls).items()
                      if sub.matches(cls, ref) and visible(ctx, cls, ref)]
            break
        changes = hub.changes_since(since, sub)
        if changes:
            events = [_record(cls, op, ref, eid, None if op == "del" else store.find(cls, ref))
                      for cls, ref, op, eid in changes if visible(ctx, cls, ref)]
            break
        remaining = deadline - loop.time()
        if remaining <= 0 or hub.closed:
            events = []
            break
        await hub.wait(remaining)
    counts = {CLASSES[c].event_class: len(store.all(c)) for c in sorted(sub.class_names())}
    return {"events": events, "valid_ref_counts": counts, "token": hub.token()}


@table.message("event.get_current_id", async_ok=False)
def get_current_id(ctx: Ctx) -> int:
    return ctx.services.events.last_id


@table.message("event.inject", ("class", STRING), ("ref", STRING), async_ok=False)
def inject(ctx: Ctx, cls: str, ref: str) -> str:
    spec = class_spec(cls)
    if spec is None:
        raise XenAPIError("EVENT_SUBSCRIPTION_PARSE_FAILURE", cls)
    rec = ctx.store.get(spec.name, ref)
    ctx.services.events.publish(spec.name, "mod", ref, rec)
    return ctx.services.events.token()
