"""The object store: an in-memory cache that is the source of truth for reads, written through
to a database by one writer thread (the engine: SQLite in WAL mode, the default, or PostgreSQL;
`engines.py` is the seam).

- Reads never touch SQLite or leave the event loop: records are plain dicts, replaced (never
  mutated) on change, so a record handed to a caller or an event snapshot cannot change under it.
- Writes happen inside a transaction (`with store.transaction():`, implicit for a single call)
  that keeps an undo log: an exception anywhere inside restores the cache as it was, so a failed
  call leaves no half-made objects. On success the rows go to the writer thread, which commits
  every batch queued since its last commit in one database transaction (group commit), and
  the events are published.
- `await store.sync()` is the durability barrier: the RPC layer awaits it before replying to any
  call that wrote, so an acknowledged change survives kill -9 (and power loss with
  synchronous=FULL).
- Reverse reference sets (VM.VBDs from VBD.VM, ...) are derived from the datamodel: kept in the
  cache on every change, never stored, rebuilt at load.
- Agents sharing one database (PostgreSQL) follow each other: the engine hands over what another
  agent committed, which replaces the cached record and raises the same events a local change
  does, unless this agent's own write of that record is newer (pending, or later in the
  database's change log).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue
import threading
import uuid as _uuid
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Callable, Iterator

from . import bookkeeping  # noqa: F401 - registers the internal classes in STORED
from .datamodel import CLASSES, STORED, ClassSpec, FieldSpec
from .engines import Engine
from .errors import XenAPIError, handle_invalid, uuid_invalid
from .events import EventHub
from .xtypes import NULL_REF, CachedStruct, all_text

__all__ = ["Store", "new_ref", "new_uuid", "WROTE", "schema", "stored_row", "new_record"]

# Set in the context of the call (asyncio task) that wrote: its reply waits for durability,
# a concurrent reader's does not.
WROTE: contextvars.ContextVar[bool] = contextvars.ContextVar("store_wrote", default=False)

log = logging.getLogger(__name__)


def new_uuid() -> str:
    return str(_uuid.uuid4())


def new_ref() -> str:
    return f"OpaqueRef:{_uuid.uuid4()}"


def _stored_fields(spec: ClassSpec) -> list[FieldSpec]:
    return [fs for fs in spec.fields if fs.reverse is None]


def schema() -> dict[str, list[tuple[str, str]]]:
    """Each stored class's columns, as an engine creates them."""
    return {name: [(fs.name, fs.xtype.sql) for fs in _stored_fields(spec)]
            for name, spec in STORED.items()}


def new_record(cls: str, fields: dict) -> dict:
    """A whole record of `cls`: `fields`, each other field's default, a fresh uuid."""
    rec = {fs.name: fields[fs.name] if fs.name in fields else fs.make_default()
           for fs in STORED[cls].fields}
    rec["uuid"] = rec["uuid"] or new_uuid()
    return rec


def stored_row(cls: str, ref: str, rec: dict) -> list:
    """A record as an engine's "put" carries it: [ref, value, ...] in column order."""
    return [ref] + [fs.xtype.to_db(rec[fs.name]) for fs in _stored_fields(STORED[cls])]


class _Txn:
    __slots__ = ("undo", "touched", "remote")

    def __init__(self) -> None:
        self.remote = False
        self.undo: list[tuple[str, str, dict | None]] = []   # (cls, ref, record before)
        self.touched: dict[tuple[str, str], dict | None] = {}  # first-seen state per object


class _Writer(threading.Thread):
    """Owns the engine; commits queued batches and resolves their futures."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop,
                 done: Callable[[list, BaseException | None, int | None], None]) -> None:
        super().__init__(name="store-writer", daemon=True)
        self.engine = engine
        self.loop = loop
        self.done = done    # on the loop: ([(future, undo)], error or None, change-log id)
        self.q: queue.SimpleQueue = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            batches = [item]
            while True:   # group commit: take everything already waiting
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                batches.append(nxt)
            error: BaseException | None = None
            change_id = None
            try:
                change_id = self.engine.commit(op for ops, _, _ in batches for op in ops)
            except BaseException as e:  # noqa: BLE001 - reported to every waiter
                log.exception("database commit failed")
                error = e
            self.loop.call_soon_threadsafe(self.done, [b[1:] for b in batches], error,
                                           change_id)


class Store:
    FENCE_TIMEOUT = 5.0

    def __init__(self, engine: Engine, events: EventHub) -> None:
        self.engine = engine
        self.events = events
        self.tables: dict[str, dict[str, dict]] = {name: {} for name in STORED}
        self._uuids: dict[str, dict[str, str]] = {name: {} for name in STORED}
        # (member class, member field) -> (owner class, owner's reverse field)
        self._reverse: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for spec in CLASSES.values():
            for fs in spec.fields:
                if fs.reverse:
                    member_cls = fs.xtype.elem.cls
                    self._reverse.setdefault((member_cls, fs.reverse), []).append((spec.name, fs.name))
        self._txn: _Txn | None = None
        self._pending_ops: list[tuple] = []
        self._pending_undo: list[tuple] = []     # (cls, ref, before, after) of those ops
        self._pending_fut: asyncio.Future | None = None
        self._last_fut: asyncio.Future | None = None
        self.write_seq = 0
        self._writer: _Writer | None = None
        # this agent's writes of each record: how many are not committed yet, and the
        # change-log id of the latest committed one (what another agent's change must beat)
        self._unacked: dict[tuple[str, str], int] = {}
        self._local_id: dict[tuple[str, str], int] = {}
        self._remote_upto = 0                 # the change-log id the follower has read to
        self._upto_waiters: list[tuple[int, asyncio.Future]] = []

    # --- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        """Create or migrate the schema and load every table (at start-up, before serving)."""
        engine = self.engine
        # adding a field to the datamodel is a new column, nothing more
        engine.open(schema())
        loop = asyncio.get_running_loop()
        # before the load: a change committed meanwhile is both loaded and delivered (applied
        # again after the load, the same row), never lost
        engine.follow(lambda changes, upto: loop.call_soon_threadsafe(self._remote, changes,
                                                                     upto))
        for name, spec in STORED.items():
            cols = _stored_fields(spec)
            table, uuids = self.tables[name], self._uuids[name]
            for row in engine.rows(name, [fs.name for fs in cols]):
                rec = {}
                for fs, raw in zip(cols, row[1:]):
                    rec[fs.name] = fs.make_default() if raw is None else fs.xtype.from_db(raw)
                for fs in spec.fields:
                    if fs.reverse:
                        rec[fs.name] = []
                table[row[0]] = CachedStruct(rec)
                uuids[rec["uuid"]] = row[0]
        for (member_cls, member_field), owners in self._reverse.items():
            for ref, rec in self.tables[member_cls].items():
                for owner_cls, owner_field in owners:
                    owner = self.tables[owner_cls].get(rec.get(member_field, NULL_REF))
                    if owner is not None:
                        owner[owner_field].append(ref)
        self._writer = _Writer(engine, asyncio.get_running_loop(), self._written)
        self._writer.start()

    async def close(self) -> None:
        await self.sync()
        if self._writer is not None:
            # everything is committed (sync): the writer only has to read the stop mark and
            # return, so joining it here is immediate (and borrows no pool thread)
            self._writer.q.put(None)
            self._writer.join()
            self._writer.engine.close()
            self._writer = None

    # --- reads -----------------------------------------------------------------------------
    def get(self, cls: str, ref: str) -> dict:
        try:
            return self.tables[cls][ref]
        except KeyError:
            raise handle_invalid(cls, ref) from None

    def find(self, cls: str, ref: str) -> dict | None:
        return self.tables[cls].get(ref)

    def all(self, cls: str) -> dict[str, dict]:
        return self.tables[cls]

    def ref_of_uuid(self, cls: str, uuid: str) -> str:
        try:
            return self._uuids[cls][uuid]
        except KeyError:
            raise uuid_invalid(cls, uuid) from None

    # --- writes ----------------------------------------------------------------------------
    @asynccontextmanager
    async def durable(self) -> AsyncIterator[None]:
        """The durability barrier: whatever the body wrote (in this task's context) is on disk
        when the block ends, so an acknowledged change survives a crash. Reads pay nothing."""
        token = WROTE.set(False)
        try:
            yield
            if WROTE.get():
                await self.sync()
        finally:
            WROTE.reset(token)

    @contextmanager
    def transaction(self, *, remote: bool = False) -> Iterator[None]:
        """All-or-nothing: changes inside are undone if anything raises. Never spans an await.
        `remote`: what another agent committed, applied to the cache and published only."""
        if self._txn is not None:
            yield
            return
        txn = self._txn = _Txn()
        txn.remote = remote
        try:
            yield
        except BaseException:
            self._txn = None
            for cls, ref, before in reversed(txn.undo):
                self._set(cls, ref, before)
            raise
        self._txn = None
        self._commit(txn)

    def create(self, cls: str, fields: dict, ref: str | None = None) -> str:
        spec = STORED[cls]
        rec = {}
        for fs in spec.fields:
            rec[fs.name] = fields[fs.name] if fs.name in fields else fs.make_default()
        for fs in spec.fields:
            if fs.reverse:
                rec[fs.name] = []
        if not rec["uuid"]:
            rec["uuid"] = new_uuid()
        if rec["uuid"] in self._uuids[cls]:
            raise XenAPIError("INVALID_VALUE", "uuid", rec["uuid"])
        ref = ref or new_ref()
        with self.transaction():
            self._change(cls, ref, rec)
        return ref

    def update(self, cls: str, ref: str, changes: dict) -> dict:
        old = self.get(cls, ref)
        rec = {**old, **changes}
        with self.transaction():
            self._change(cls, ref, rec)
        return rec

    def destroy(self, cls: str, ref: str) -> None:
        self.get(cls, ref)
        with self.transaction():
            self._change(cls, ref, None)

    def touch(self, cls: str, ref: str, changes: dict) -> None:
        """Bookkeeping that neither persists nor raises events (session.last_active)."""
        rec = self.tables[cls].get(ref)
        if rec is not None:
            self.tables[cls][ref] = {**rec, **changes}

    async def sync(self) -> None:
        """Wait until everything written so far is committed to the database."""
        if self._pending_fut is not None:
            self._flush()
        fut = self._last_fut
        if fut is not None and not fut.done():
            await asyncio.shield(fut)
        elif fut is not None and fut.exception() is not None:
            raise fut.exception()

    async def fence(self, executor=None) -> None:
        """Wait until the cache holds every change any agent committed to the database
        before this call (after a call another agent ran for us, so the caller reads what
        that call wrote). Immediate where no other agent writes."""
        if not self.engine.shared:
            return
        loop = asyncio.get_running_loop()
        target = await loop.run_in_executor(executor, self.engine.latest_change)
        if self._remote_upto >= target:
            return
        fut = loop.create_future()
        self._upto_waiters.append((target, fut))
        try:
            await asyncio.wait_for(fut, self.FENCE_TIMEOUT)
        except asyncio.TimeoutError:     # the follower is reconnecting: it catches up later
            log.warning("the database's changes up to %d have not arrived yet", target)

    # --- internals -------------------------------------------------------------------------
    def _change(self, cls: str, ref: str, new: dict | None) -> None:
        """Replace one record (None = delete) and keep reverse sets; inside a transaction."""
        txn = self._txn
        assert txn is not None
        old = self.tables[cls].get(ref)
        if new is not None:
            for name, value in new.items():     # what no row or reply could carry: refused
                if (old is None or old.get(name) is not value) and not all_text(value):
                    raise XenAPIError("INVALID_VALUE", f"{cls}.{name}",
                                      "not valid Unicode (a lone surrogate)")
        self._record_undo(txn, cls, ref, old)
        self._set(cls, ref, new)
        for fs in STORED[cls].fields:
            owners = self._reverse.get((cls, fs.name))
            if not owners:
                continue
            before = old[fs.name] if old else NULL_REF
            after = new[fs.name] if new else NULL_REF
            if before == after:
                continue
            for owner_cls, owner_field in owners:
                self._adjust_reverse(txn, owner_cls, before, owner_field, ref, add=False)
                self._adjust_reverse(txn, owner_cls, after, owner_field, ref, add=True)

    def _adjust_reverse(self, txn: _Txn, cls: str, owner: str, field: str, member: str,
                        add: bool) -> None:
        rec = self.tables[cls].get(owner)
        if rec is None:
            return
        current = rec[field]
        if add == (member in current):
            return
        self._record_undo(txn, cls, owner, rec)
        updated = current + [member] if add else [m for m in current if m != member]
        self._set(cls, owner, {**rec, field: updated})

    def _record_undo(self, txn: _Txn, cls: str, ref: str, before: dict | None) -> None:
        key = (cls, ref)
        if key not in txn.touched:
            txn.touched[key] = before
        txn.undo.append((cls, ref, before))

    def _set(self, cls: str, ref: str, rec: dict | None) -> None:
        table, uuids = self.tables[cls], self._uuids[cls]
        old = table.get(ref)
        if old is not None:
            uuids.pop(old["uuid"], None)
        if rec is None:
            table.pop(ref, None)
        else:
            table[ref] = rec if type(rec) is CachedStruct else CachedStruct(rec)
            uuids[rec["uuid"]] = ref

    def _commit(self, txn: _Txn) -> None:
        if not txn.touched:
            return
        if not txn.remote:
            self.write_seq += 1
            WROTE.set(True)
        for (cls, ref), before in txn.touched.items():
            after = self.tables[cls].get(ref)
            if before is None and after is None:
                continue
            public = cls in CLASSES          # the internal bookkeeping raises no events
            if txn.remote:                   # in the database already
                if public and before is not after:
                    self.events.publish(cls, "del" if after is None else
                                        "add" if before is None else "mod", ref, after)
                continue
            self._pending_undo.append((cls, ref, before, after))
            self._unacked[(cls, ref)] = self._unacked.get((cls, ref), 0) + 1
            if after is None:
                self._pending_ops.append(("del", cls, ref))
                if public:
                    self.events.publish(cls, "del", ref, None)
                continue
            if before is not None and before is after:
                continue
            spec = STORED[cls]
            if before is None or self._stored_differs(spec, before, after):
                self._pending_ops.append(("put", cls, stored_row(cls, ref, after)))
            if public:
                self.events.publish(cls, "add" if before is None else "mod", ref, after)
        if self._pending_fut is None:
            self._pending_fut = asyncio.get_running_loop().create_future()
            self._last_fut = self._pending_fut
            asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _stored_differs(spec: ClassSpec, a: dict, b: dict) -> bool:
        return any(a[fs.name] != b[fs.name] for fs in spec.fields if fs.reverse is None)

    def _flush(self) -> None:
        fut, ops, undo = self._pending_fut, self._pending_ops, self._pending_undo
        if fut is None:
            return
        self._pending_fut, self._pending_ops, self._pending_undo = None, [], []
        if not ops:
            fut.set_result(None)
            return
        assert self._writer is not None, "store is not open"
        self._writer.q.put((ops, fut, undo))

    def _remote(self, changes: list, upto: int = 0) -> None:
        """Another agent's committed changes (on the loop), each with the record's row as the
        database holds it; skipped where this agent's own write of it is newer. `upto`: the
        change-log id the follower has read to; this agent's writes at or below it need no
        remembering (every later remote change has a higher id), so the map stays small."""
        with self.transaction(remote=True):
            for cls, ref, row, change_id in changes:
                key = (cls, ref)
                if key in self._unacked or self._local_id.get(key, 0) > change_id:
                    continue
                old = self.tables[cls].get(ref)
                if row is None:
                    if old is not None:
                        self._change(cls, ref, None)
                    continue
                spec = STORED[cls]
                rec = {fs.name: fs.make_default() if raw is None else fs.xtype.from_db(raw)
                       for fs, raw in zip(_stored_fields(spec), row)}
                for fs in spec.fields:
                    if fs.reverse:
                        rec[fs.name] = old[fs.name] if old is not None else \
                            self._members(cls, ref, fs.name)
                if old is not None and not self._stored_differs(spec, old, rec):
                    continue                 # what the cache holds already (loaded, or ours)
                self._change(cls, ref, rec)
        if len(self._local_id) > 4096:        # after the batch: its ids are <= upto too
            self._local_id = {k: v for k, v in self._local_id.items() if v > upto}
        self._remote_upto = max(self._remote_upto, upto)
        if self._upto_waiters:
            waiting = []
            for target, fut in self._upto_waiters:
                if target <= self._remote_upto:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    waiting.append((target, fut))
            self._upto_waiters = waiting

    def _members(self, owner_cls: str, owner: str, owner_field: str) -> list[str]:
        """A new record's reverse set from the members the cache holds already."""
        for (member_cls, member_field), owners in self._reverse.items():
            if (owner_cls, owner_field) in owners:
                return [r for r, m in self.tables[member_cls].items()
                        if m.get(member_field) == owner]
        return []

    def _written(self, batches: list[tuple[asyncio.Future, list]], error: BaseException | None,
                 change_id: int | None = None) -> None:
        """The writer's answer, on the loop. A failed commit undoes its batches in memory
        (newest first), where nothing changed the record since, and says so to their events
        and waiters: what the database does not hold, no client is shown."""
        for _, undo in batches:
            for cls, ref, _, _ in undo:
                key = (cls, ref)
                left = self._unacked.get(key, 0) - 1
                if left > 0:
                    self._unacked[key] = left
                else:
                    self._unacked.pop(key, None)
                if change_id is not None:
                    self._local_id[key] = change_id
        if error is not None:
            for _, undo in reversed(batches):
                for cls, ref, before, after in reversed(undo):
                    if self.tables[cls].get(ref) is not after:
                        continue     # written again since: that later batch carries it
                    self._set(cls, ref, before)
                    if cls in CLASSES:
                        self.events.publish(cls, "del" if before is None else
                                            "add" if after is None else "mod", ref,
                                            self.tables[cls].get(ref))
        for fut, _ in batches:
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(XenAPIError("INTERNAL_ERROR",
                                              f"database write failed: {error}"))

