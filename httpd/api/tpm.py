"""VTPM messages: a halted VM gets at most one virtual TPM; its state is a base64 string kept
in a `secret`, read and replaced whole (Xen Orchestra backs it up and restores it that way).

Copies of a VM (clone, copy, snapshot) copy its VTPM's state unless the VTPM is unique, whose
copies start empty; destroying the VM destroys its VTPMs and their secrets.
"""

from __future__ import annotations

import base64
import binascii

from ..core.context import Ctx
from ..core.dispatch import MessageTable
from ..model.errors import XenAPIError
from ..model.store import Store
from ..model.xtypes import BOOL, STRING, Ref

table = MessageTable()

__all__ = ["table", "copy_vtpms", "destroy_vtpms"]

MAX_CONTENTS = 1 << 20      # base64 characters; a TPM 2.0 state is tens of KiB


def _assert_halted(ctx: Ctx, vm: str) -> dict:
    rec = ctx.store.get("VM", vm)
    if rec["power_state"] != "Halted":
        raise XenAPIError("VM_BAD_POWER_STATE", vm, "halted", rec["power_state"].lower())
    return rec


def _introduce(store: Store, vm: str, is_unique: bool, value: str) -> str:
    secret = store.create("secret", {"value": value})
    return store.create("VTPM", {"VM": vm, "is_unique": is_unique, "contents": secret})


@table.message("VTPM.create", ("vM", Ref("VM")), ("is_unique", BOOL))
def vtpm_create(ctx: Ctx, vm: str, is_unique: bool) -> str:
    """A new, empty VTPM for a halted VM that has none."""
    rec = _assert_halted(ctx, vm)
    if rec["VTPMs"]:
        raise XenAPIError("VTPM_MAX_AMOUNT_REACHED", str(len(rec["VTPMs"])))
    with ctx.store.transaction():
        return _introduce(ctx.store, vm, is_unique, "")


@table.message("VTPM.destroy", ("self", Ref("VTPM")))
def vtpm_destroy(ctx: Ctx, vtpm: str) -> str:
    rec = ctx.store.get("VTPM", vtpm)
    _assert_halted(ctx, rec["VM"])
    with ctx.store.transaction():
        _destroy(ctx.store, vtpm, rec)
    return ""


@table.message("VTPM.get_contents", ("self", Ref("VTPM")))
def vtpm_get_contents(ctx: Ctx, vtpm: str) -> str:
    """The TPM's state, base64."""
    rec = ctx.store.get("VTPM", vtpm)
    return ctx.store.get("secret", rec["contents"])["value"]


@table.message("VTPM.set_contents", ("self", Ref("VTPM")), ("contents", STRING))
def vtpm_set_contents(ctx: Ctx, vtpm: str, contents: str) -> str:
    """Replace the state (base64; the VM halted, so no running TPM holds an older one)."""
    rec = ctx.store.get("VTPM", vtpm)
    _assert_halted(ctx, rec["VM"])
    if len(contents) > MAX_CONTENTS:
        raise XenAPIError("INVALID_VALUE", "contents", f"longer than {MAX_CONTENTS} characters")
    try:
        base64.b64decode(contents, validate=True)
    except (binascii.Error, ValueError):
        raise XenAPIError("INVALID_VALUE", "contents", "not base64") from None
    ctx.store.update("secret", rec["contents"], {"value": contents})
    return ""


def _destroy(store: Store, vtpm: str, rec: dict) -> None:
    if store.find("secret", rec["contents"]) is not None:
        store.destroy("secret", rec["contents"])
    store.destroy("VTPM", vtpm)


def copy_vtpms(store: Store, source: dict, new_vm: str) -> None:
    """Inside the copy's transaction: its VTPMs, with the state unless unique."""
    for ref in source["VTPMs"]:
        rec = store.get("VTPM", ref)
        value = "" if rec["is_unique"] else store.get("secret", rec["contents"])["value"]
        _introduce(store, new_vm, rec["is_unique"], value)


def destroy_vtpms(store: Store, vm_rec: dict) -> None:
    """Inside the VM's destroy transaction."""
    for ref in vm_rec["VTPMs"]:
        _destroy(store, ref, store.get("VTPM", ref))
