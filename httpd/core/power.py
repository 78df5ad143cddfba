"""The VM power-state machine, written once: which operation runs from which power states, the
state it leaves the VM in, and what the VM's metrics say there.

Everything else is derived from `VM_OPERATIONS`: the guards (`require`), `allowed_operations`
(`vm_allowed_operations`) and what a state marks in the database (`STATES`, read by
`lifecycle.Lifecycle.enter`). An operation missing from the table is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..model.errors import XenAPIError
from ..model.xtypes import NULL_REF

__all__ = ["VMOp", "VM_OPERATIONS", "TEMPLATE_OPERATIONS", "StateMarks", "STATES", "require",
           "vm_allowed_operations", "LIVE"]

HALTED, RUNNING, PAUSED, SUSPENDED = "Halted", "Running", "Paused", "Suspended"
LIVE = (RUNNING, PAUSED)          # a domain exists


@dataclass(frozen=True)
class VMOp:
    """One operation: the power states it runs from (the first is the one an error names) and
    the state it leaves (None: the power state does not change)."""

    start: tuple[str, ...]
    to: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.start) | ({self.to} - {None})
        if not unknown <= set(STATES):
            raise ValueError(f"unknown power states {unknown - set(STATES)}")


@dataclass(frozen=True)
class StateMarks:
    """What the database says of a VM in one power state."""

    metrics_state: tuple[str, ...]     # VM_metrics.state
    domain: bool                       # a domain runs: VBDs/VIFs attached, consoles exist
    vm_fields: Mapping[str, object]    # VM fields the state fixes


STATES: dict[str, StateMarks] = {
    HALTED: StateMarks((), False, {"domid": -1, "resident_on": NULL_REF,
                                   "guest_metrics": NULL_REF, "memory_target": 0}),
    SUSPENDED: StateMarks((), False, {"domid": -1, "resident_on": NULL_REF,
                                      "guest_metrics": NULL_REF}),
    RUNNING: StateMarks((), True, {}),
    PAUSED: StateMarks(("paused",), True, {}),
}

# op -> from-states -> to-state. Order is the order of allowed_operations.
VM_OPERATIONS: dict[str, VMOp] = {
    "start": VMOp((HALTED,), RUNNING),
    "start_on": VMOp((HALTED,), RUNNING),
    "clone": VMOp((HALTED,)),
    "copy": VMOp((HALTED,)),
    "snapshot": VMOp((HALTED, RUNNING, PAUSED, SUSPENDED)),
    "checkpoint": VMOp((RUNNING,)),
    "destroy": VMOp((HALTED, SUSPENDED)),
    "export": VMOp((HALTED, SUSPENDED)),
    "provision": VMOp((HALTED,)),
    "make_into_template": VMOp((HALTED,)),
    "changing_memory_limits": VMOp((HALTED,)),
    "changing_VCPUs": VMOp((HALTED,)),
    "clean_shutdown": VMOp((RUNNING,), HALTED),
    "hard_shutdown": VMOp((RUNNING, PAUSED, SUSPENDED), HALTED),
    "shutdown": VMOp((RUNNING, PAUSED, SUSPENDED), HALTED),
    "clean_reboot": VMOp((RUNNING,), RUNNING),
    "hard_reboot": VMOp((RUNNING, PAUSED), RUNNING),
    "pause": VMOp((RUNNING,), PAUSED),
    "unpause": VMOp((PAUSED,), RUNNING),
    "suspend": VMOp((RUNNING,), SUSPENDED),
    "resume": VMOp((SUSPENDED,), RUNNING),
    "resume_on": VMOp((SUSPENDED,), RUNNING),
    "changing_dynamic_range": VMOp((RUNNING,)),
    "pool_migrate": VMOp((RUNNING,), RUNNING),
}
TEMPLATE_OPERATIONS = ("clone", "copy", "provision", "export", "destroy")


def require(op: str, ref: str, rec: Mapping, *, start: tuple[str, ...] | None = None) -> VMOp:
    """VM_BAD_POWER_STATE unless `rec` is in a state `op` runs from (`start` narrows it)."""
    spec = VM_OPERATIONS[op]
    states = start or spec.start
    if rec["power_state"] not in states:
        raise XenAPIError("VM_BAD_POWER_STATE", ref, states[0].lower(),
                          rec["power_state"].lower())
    return spec


def vm_allowed_operations(rec: Mapping) -> list[str]:
    if rec["current_operations"] or rec["is_control_domain"]:
        return []
    if rec["is_a_template"]:
        return list(TEMPLATE_OPERATIONS)
    return [op for op, spec in VM_OPERATIONS.items() if rec["power_state"] in spec.start]
