"""The agent's own bookkeeping, stored like the XenAPI's classes (same database, same
transactions) but on no API: no message, event, CLI name or export names these classes.
`model.store` imports this module, so a store always holds them."""

from __future__ import annotations

from typing import Any

from .schema import RO, f, xapi_class
from .xtypes import STRING

__all__ = ["unfinished", "task_owner"]

@xapi_class(internal=True)
class unfinished:
    """An object an operation is still making (an import's VM, a copy's VDI). Written in the
    transaction that creates the object and removed when the operation ends well; the next
    start removes every object still marked, which is what a crash left half-made. No API
    call can write it (an other_config key could be forged)."""
    cls: Any = f(STRING, RO)
    obj: Any = f(STRING, RO)
    task: Any = f(STRING, RO)


@xapi_class(internal=True)
class task_owner:
    """The session that made a task (ref `owner/<task ref>`): a session's ref is its bearer
    token, so no task record may show it to other clients."""
    task: Any = f(STRING, RO)
    session: Any = f(STRING, RO)
