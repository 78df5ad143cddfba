"""Explicit XenAPI messages, one module per class family; `all_tables()` in override order."""

from __future__ import annotations

from ..core.dispatch import MessageTable
from . import (devices, event, host, message, pool, session, stats, storage, system, task, tpm,
               vm)

__all__ = ["all_tables"]


def all_tables() -> list[MessageTable]:
    return [session.table, task.table, event.table, system.table, host.table, pool.table,
            storage.table, devices.table, tpm.table, vm.table, stats.table, message.table]
