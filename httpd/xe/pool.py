"""xe pool-join, pool-eject, pool-designate-new-master, pool-emergency-transition-to-master."""

from __future__ import annotations

from .client import Session
from .core import Ctx, command

__all__: list[str] = []


@command("pool-join", "Join the pool of the master at master-address (this host must be alone "
         "with no running VM); its agent starts again as a slave.",
         reqd=("master-address", "master-username", "master-password"))
def pool_join(ctx: Ctx) -> None:
    ctx.call("pool.join", ctx.need("master-address"), ctx.need("master-username"),
             ctx.need("master-password"))


@command("pool-eject", "Take a host out of the pool: it starts again alone, with its local SRs "
         "and the VMs on them.", reqd=("host-uuid",))
def pool_eject(ctx: Ctx) -> None:
    ctx.call("pool.eject", ctx.by_uuid("host", ctx.need("host-uuid")))


@command("pool-designate-new-master", "Make another host of the pool its master.",
         reqd=("host-uuid",))
def pool_designate_new_master(ctx: Ctx) -> None:
    ctx.call("pool.designate_new_master", ctx.by_uuid("host", ctx.need("host-uuid")))


@command("pool-emergency-transition-to-master", "On a slave whose master died: become the "
         "master now (run on the slave itself).", session=False)
def pool_emergency_transition_to_master(ctx: Ctx) -> None:
    session = Session(ctx.endpoint).login(slave_local=True)
    try:
        session.call("pool.emergency_transition_to_master")
    finally:
        session.logout()
