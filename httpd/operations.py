"""allowed_operations / current_operations, kept true by one lock per object.

An operation takes the object's lock synchronously (no await between the check and the write,
so two callers cannot both get it), shows up in current_operations while it runs, and
allowed_operations is recomputed from the power state whenever either changes.
"""

from __future__ import annotations

import uuid as _uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from .dispatch import Ctx
from .errors import XenAPIError

__all__ = ["vm_allowed_operations", "operation", "require_power_state", "refresh_allowed"]

_VM_OPS = {
    "Halted": ["start", "start_on", "clone", "copy", "destroy", "export", "provision",
               "make_into_template", "changing_memory_limits", "changing_VCPUs"],
    "Running": ["clean_shutdown", "hard_shutdown", "shutdown", "clean_reboot", "hard_reboot",
                "pause", "suspend", "changing_dynamic_range"],
    "Paused": ["unpause", "hard_shutdown", "shutdown", "hard_reboot"],
    "Suspended": ["resume", "resume_on", "hard_shutdown", "shutdown", "clone", "copy", "export",
                  "destroy"],
}
_TEMPLATE_OPS = ["clone", "copy", "provision", "export", "destroy"]


def vm_allowed_operations(rec: dict) -> list[str]:
    if rec["current_operations"]:
        return []
    if rec["is_control_domain"]:
        return []
    if rec["is_a_template"]:
        return list(_TEMPLATE_OPS)
    return list(_VM_OPS.get(rec["power_state"], []))


def _allowed(cls: str, rec: dict) -> list[str]:
    if cls == "VM":
        return vm_allowed_operations(rec)
    if rec["current_operations"]:
        return []
    return {"VDI": ["clone", "copy", "resize", "destroy", "snapshot"],
            "VBD": ["plug", "unplug", "unplug_force", "attach"] if not rec.get("currently_attached")
            else ["unplug", "unplug_force"],
            "VIF": ["plug", "unplug", "attach"] if not rec.get("currently_attached")
            else ["unplug", "unplug_force"]}.get(cls, rec["allowed_operations"])


def refresh_allowed(ctx: Ctx, cls: str, ref: str) -> None:
    rec = ctx.store.find(cls, ref)
    if rec is not None:
        allowed = _allowed(cls, rec)
        if allowed != rec["allowed_operations"]:
            ctx.store.update(cls, ref, {"allowed_operations": allowed})


def require_power_state(ref: str, rec: dict, *expected: str) -> None:
    if rec["power_state"] not in expected:
        raise XenAPIError("VM_BAD_POWER_STATE", ref, expected[0].lower(),
                          rec["power_state"].lower())


@asynccontextmanager
async def operation(ctx: Ctx, cls: str, ref: str, op: str) -> AsyncIterator[str]:
    """Hold `ref`'s lock for `op`; OTHER_OPERATION_IN_PROGRESS if another op holds it."""
    rec = ctx.store.get(cls, ref)
    if rec["current_operations"]:
        key, other = next(iter(rec["current_operations"].items()))
        raise XenAPIError("OTHER_OPERATION_IN_PROGRESS", cls, ref, other, key)
    key = ctx.task or f"OpaqueRef:{_uuid.uuid4()}"
    ctx.store.update(cls, ref, {"current_operations": {key: op}, "allowed_operations": []})
    try:
        yield key
    finally:
        rec = ctx.store.find(cls, ref)
        if rec is not None:
            ops = {k: v for k, v in rec["current_operations"].items() if k != key}
            ctx.store.update(cls, ref, {"current_operations": ops})
            refresh_allowed(ctx, cls, ref)
