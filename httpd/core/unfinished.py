"""Marks on objects an operation is still making (the internal `unfinished` class), written in
the same transaction as the object, so a crash at any point leaves either nothing or a marked
object the next start removes. No API call reads or writes them."""

from __future__ import annotations

from typing import Iterable

from ..model.store import Store

__all__ = ["mark", "clear", "marked"]


def mark(store: Store, cls: str, ref: str, task: str | None, host: str = "") -> None:
    """Inside the transaction that creates `ref`, by the agent of `host` (in a pool, each
    agent's start sweeps only what it left)."""
    store.create("unfinished", {"cls": cls, "obj": ref, "task": task or "", "host": host})


def clear(store: Store, refs: Iterable[str]) -> None:
    """The operation ended well: these objects stay."""
    done = set(refs)
    with store.transaction():
        for ref, rec in list(store.all("unfinished").items()):
            if rec["obj"] in done:
                store.destroy("unfinished", ref)


def marked(store: Store, host: str | None = None) -> dict[str, list[str]]:
    """Class -> objects still marked (at start: what a crash left half-made), by `host`'s
    agent (or a lone host's, which names none) when a host is given."""
    out: dict[str, list[str]] = {}
    for rec in store.all("unfinished").values():
        if host is not None and rec["host"] not in ("", host):
            continue
        out.setdefault(rec["cls"], []).append(rec["obj"])
    return out
