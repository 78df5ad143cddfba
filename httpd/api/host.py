"""host.* and pool.*: the host's clock (Xen Orchestra reads it before every statistics poll),
enabling and disabling it, plugins and HA (neither exists here: xapi's errors for that)."""

from __future__ import annotations

import datetime as _dt

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..model.xtypes import STRING, MapOf, Ref

table = MessageTable()

__all__ = ["table"]


@table.message("host.get_servertime", ("host", Ref("host")))
def get_servertime(ctx: Ctx, host: str) -> _dt.datetime:
    """The host's clock in UTC."""
    ctx.store.get("host", host)
    return _dt.datetime.now(_dt.timezone.utc)


@table.message("host.disable", ("host", Ref("host")))
def disable(ctx: Ctx, host: str) -> str:
    """No new VM starts here until host.enable (Xen Orchestra disables before maintenance)."""
    ctx.store.get("host", host)
    ctx.store.update("host", host, {"enabled": False})
    return ""


@table.message("host.enable", ("host", Ref("host")))
def enable(ctx: Ctx, host: str) -> str:
    ctx.store.get("host", host)
    ctx.store.update("host", host, {"enabled": True})
    return ""


@table.message("host.call_plugin", ("host", Ref("host")), ("plugin", STRING), ("fn", STRING),
               ("args", MapOf(STRING, STRING)))
def call_plugin(ctx: Ctx, host: str, plugin: str, fn: str, args: dict) -> str:
    """This host has no xapi plugins (/etc/xapi.d/plugins)."""
    ctx.store.get("host", host)
    raise XenAPIError("XENAPI_MISSING_PLUGIN", plugin)


@table.message("pool.disable_ha")
def disable_ha(ctx: Ctx) -> str:
    raise XenAPIError("HA_NOT_ENABLED")
