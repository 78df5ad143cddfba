"""host.* and pool.*: the host's clock (Xen Orchestra reads it before every statistics poll),
enabling and disabling it, restarting the agent, rebooting and shutting the host down (as
xapi: only a disabled host with no running VM), plugins and HA (neither exists here: xapi's
errors for that)."""

from __future__ import annotations

import datetime as _dt

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..model.xtypes import INT, STRING, MapOf, Ref

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


@table.message("host.restart_agent", ("host", Ref("host")))
def restart_agent(ctx: Ctx, host: str) -> str:
    """The agent stops gracefully after this reply and starts again (sessions and tasks kept
    in the database survive; running domains are saved and resumed, as at any restart)."""
    ctx.store.get("host", host)
    ctx.services.control.request("restart")
    return ""


@table.message("host.shutdown_agent")
def shutdown_agent(ctx: Ctx) -> str:
    """The agent stops after this reply (the local host's agent: the call names no host)."""
    ctx.services.control.request("stop")
    return ""


def _running_vms(ctx: Ctx, rec: dict) -> list[str]:
    return [vm for vm in rec["resident_VMs"]
            if not (v := ctx.store.get("VM", vm))["is_control_domain"]
            and v["power_state"] in ("Running", "Paused")]


@table.message("host.get_vms_which_prevent_evacuation", ("self", Ref("host")))
def get_vms_which_prevent_evacuation(ctx: Ctx, host: str) -> dict:
    """Each running VM, with why it cannot move: this pool has no other host to take it."""
    return {vm: ["NO_HOSTS_AVAILABLE", vm]
            for vm in _running_vms(ctx, ctx.store.get("host", host))}


@table.message("host.evacuate", ("host", Ref("host")), ("network", Ref("network")),
               ("evacuate_batch_size", INT), optional=2)
def evacuate(ctx: Ctx, host: str, network: str | None = None,
             batch: int | None = None) -> str:
    """Move every running VM to other hosts of the pool: done at once when none runs, else
    NO_HOSTS_AVAILABLE (the pool is this host)."""
    for vm in _running_vms(ctx, ctx.store.get("host", host)):
        raise XenAPIError("NO_HOSTS_AVAILABLE", vm)
    return ""


def _assert_can_power_off(ctx: Ctx, host: str) -> None:
    rec = ctx.store.get("host", host)
    if rec["enabled"]:
        raise XenAPIError("HOST_NOT_DISABLED")
    for vm in _running_vms(ctx, rec):
        raise XenAPIError("HOST_IN_USE", host, "vm", vm)


@table.message("host.reboot", ("host", Ref("host")))
def reboot(ctx: Ctx, host: str) -> str:
    """A disabled host with no running VM: the agent stops, then the host power command runs
    (`--host-power-command`); without one the agent starts again."""
    _assert_can_power_off(ctx, host)
    ctx.services.control.request("reboot")
    return ""


@table.message("host.shutdown", ("host", Ref("host")))
def shutdown(ctx: Ctx, host: str) -> str:
    """As host.reboot, powering off (without a power command the agent just stops)."""
    _assert_can_power_off(ctx, host)
    ctx.services.control.request("poweroff")
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
