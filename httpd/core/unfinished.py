"""Marks on objects an operation is still making (the internal `unfinished` class), written in
the same transaction as the object, so a crash at any point leaves either nothing or a marked
object the next start removes. No API call reads or writes them."""

from __future__ import annotations

from typing import Iterable

from ..model.store import Store

__all__ = ["mark", "clear", "marked"]


def mark(store: Store, cls: str, ref: str, task: str | None) -> None:
    """Inside the transaction that creates `ref`."""
    store.create("unfinished", {"cls": cls, "obj": ref, "task": task or ""})


def clear(store: Store, refs: Iterable[str]) -> None:
    """The operation ended well: these objects stay."""
    done = set(refs)
    with store.transaction():
        for ref, rec in list(store.all("unfinished").items()):
            if rec["obj"] in done:
                store.destroy("unfinished", ref)


def marked(store: Store) -> dict[str, list[str]]:
    """Class -> objects still marked (at start: what a crash left half-made)."""
    out: dict[str, list[str]] = {}
    for rec in store.all("unfinished").values():
        out.setdefault(rec["cls"], []).append(rec["obj"])
    return out
