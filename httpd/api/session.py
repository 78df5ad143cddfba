"""session.*: login and logout (sessions.py holds the rules)."""

from __future__ import annotations

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.xtypes import STRING

table = MessageTable()


@table.message("session.login_with_password", ("uname", STRING), ("pwd", STRING),
               ("version", STRING), ("originator", STRING), session=False, async_ok=False,
               optional=2)
async def login_with_password(ctx: Ctx, user: str, password: str, version: str = "",
                              originator: str = "") -> str:
    return await ctx.services.sessions.login(user, password, originator=originator,
                                             local=ctx.local, source=ctx.source)


@table.message("session.logout", async_ok=False)
def logout(ctx: Ctx) -> str:
    ctx.services.sessions.logout(ctx.session)
    return ""


@table.message("session.local_logout", async_ok=False)
def local_logout(ctx: Ctx) -> str:
    return logout(ctx)


@table.message("session.change_password", ("old_pwd", STRING), ("new_pwd", STRING),
               async_ok=False)
async def change_password(ctx: Ctx, old: str, new: str) -> str:
    await ctx.services.sessions.change_password(old, new, local=ctx.local, source=ctx.source)
    return ""
