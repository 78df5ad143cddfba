"""The agent's own bookkeeping, stored like the XenAPI's classes (same database, same
transactions) but on no API: no message, event, CLI name or export names these classes.
`model.store` imports this module, so a store always holds them."""

from __future__ import annotations

from typing import Any

from .schema import RO, f, xapi_class
from .xtypes import FLOAT, STRING

__all__ = ["unfinished", "task_owner", "host_agent", "root_password"]

@xapi_class(internal=True)
class unfinished:
    """An object an operation is still making (an import's VM, a copy's VDI). Written in the
    transaction that creates the object and removed when the operation ends well; the next
    start removes every object still marked, which is what a crash left half-made. No API
    call can write it (an other_config key could be forged)."""
    cls: Any = f(STRING, RO)
    obj: Any = f(STRING, RO)
    task: Any = f(STRING, RO)
    host: Any = f(STRING, RO)      # the agent that was making it ("": a lone host's)


@xapi_class(internal=True)
class task_owner:
    """The session that made a task (ref `owner/<task ref>`): a session's ref is its bearer
    token, so no task record may show it to other clients."""
    task: Any = f(STRING, RO)
    session: Any = f(STRING, RO)


@xapi_class(internal=True)
class host_agent:
    """How the other agents of a pool reach a host's agent (`url`) and that it is alive:
    `beat` grows while it runs (the master watches it change, on its own clock)."""
    host: Any = f(STRING, RO)
    url: Any = f(STRING, RO)
    beat: Any = f(FLOAT, RO)
    designated: Any = f(FLOAT, RO)   # until when (time.time()) it is the designated master


@xapi_class(internal=True)
class root_password:
    """A pool's root password (one record, ref `root_password`): the scrypt hash as JSON,
    the same on every host, so a new master checks what the old one did. A lone host keeps
    its hash in the data directory only."""
    hash: Any = f(STRING, RO)
