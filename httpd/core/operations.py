"""allowed_operations / current_operations, kept true by one lock per object.

`allowed` is the one derivation of allowed_operations, for every class that has them: VMs
from the power table, the others from `ALLOWED` below. An operation takes the object's lock
synchronously (no await between the check and the write, so two callers cannot both get it),
shows up in current_operations while it runs, and allowed_operations is recomputed whenever
either changes.
"""

from __future__ import annotations

import uuid as _uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

from ..model.errors import XenAPIError
from ..model.store import Store
from .power import vm_allowed_operations

__all__ = ["ALLOWED", "allowed", "refresh_allowed", "operation"]

# class -> (when not attached, when attached); SR and VDI have no attached form
ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "SR": (("vdi_create", "vdi_destroy", "scan", "vdi_clone", "vdi_resize"),) * 2,
    "VDI": (("clone", "copy", "resize", "destroy", "snapshot"),) * 2,
    "VBD": (("plug", "unplug", "unplug_force", "attach"), ("unplug", "unplug_force")),
    "VIF": (("plug", "unplug", "attach"), ("unplug", "unplug_force")),
}


def allowed(cls: str, rec: Mapping) -> list[str]:
    if cls == "VM":
        return vm_allowed_operations(rec)
    if cls not in ALLOWED:
        return list(rec["allowed_operations"])
    if rec["current_operations"]:
        return []
    ops = list(ALLOWED[cls][1 if rec.get("currently_attached") else 0])
    if cls == "VBD" and rec.get("type") == "CD":      # a drive: a disc goes in or comes out
        ops.append("insert" if rec.get("empty") else "eject")
    return ops


def refresh_allowed(store: Store, cls: str, ref: str) -> None:
    rec = store.find(cls, ref)
    if rec is not None:
        ops = allowed(cls, rec)
        if ops != rec["allowed_operations"]:
            store.update(cls, ref, {"allowed_operations": ops})


@asynccontextmanager
async def operation(store: Store, cls: str, ref: str, op: str,
                    key: str | None = None) -> AsyncIterator[str]:
    """Hold `ref`'s lock for `op` (under `key`, the task if any); OTHER_OPERATION_IN_PROGRESS
    if another op holds it."""
    rec = store.get(cls, ref)
    if rec["current_operations"]:
        other_key, other = next(iter(rec["current_operations"].items()))
        raise XenAPIError("OTHER_OPERATION_IN_PROGRESS", cls, ref, other, other_key)
    key = key or f"OpaqueRef:{_uuid.uuid4()}"
    store.update(cls, ref, {"current_operations": {key: op}, "allowed_operations": []})
    try:
        yield key
    finally:
        rec = store.find(cls, ref)
        if rec is not None:
            ops = {k: v for k, v in rec["current_operations"].items() if k != key}
            store.update(cls, ref, {"current_operations": ops})
            refresh_allowed(store, cls, ref)
