"""Who this agent is in its database."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ThisHost"]


@dataclass(frozen=True)
class ThisHost:
    """This host's records: fixed once the start-up found or made them (core.bootstrap)."""

    host_ref: str
    pool_ref: str
    dom0_ref: str
