"""host.*: the host's clock (Xen Orchestra reads it before every statistics poll)."""

from __future__ import annotations

import datetime as _dt

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.xtypes import Ref

table = MessageTable()

__all__ = ["table"]


@table.message("host.get_servertime", ("host", Ref("host")))
def get_servertime(ctx: Ctx, host: str) -> _dt.datetime:
    """The host's clock in UTC."""
    ctx.store.get("host", host)
    return _dt.datetime.now(_dt.timezone.utc)
