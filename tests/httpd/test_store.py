"""Store: undo on failure, derived reverse sets, durable reload, group commit — on each
engine: SQLite (the embedded default) and PostgreSQL (a cluster the tests start)."""

from __future__ import annotations

import asyncio
import urllib.parse

import pytest

from httpd.model.engines import engine_for
from httpd.model.errors import XenAPIError
from httpd.model.events import EventHub, Subscription
from httpd.model.store import Store


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """Where a test's stores keep their rows: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "db")
    return request.getfixturevalue("postgres").new_database()


def _engine(database: str):
    if database.startswith("postgresql://"):
        return engine_for(database, "")
    return engine_for("sqlite", database)


async def _open(database: str, events: EventHub | None = None) -> Store:
    store = Store(_engine(database), events or EventHub())
    store.open()
    return store


async def test_transaction_undo_leaves_nothing(database):
    store = await _open(database)
    vm = store.create("VM", {"name_label": "a"})
    with pytest.raises(XenAPIError):
        with store.transaction():
            vbd = store.create("VBD", {"VM": vm})
            store.update("VM", vm, {"name_label": "changed"})
            assert store.get("VM", vm)["VBDs"] == [vbd]
            raise XenAPIError("SR_FULL", "1", "0")
    assert store.get("VM", vm)["name_label"] == "a"
    assert store.get("VM", vm)["VBDs"] == [] and store.all("VBD") == {}
    await store.close()


async def test_reverse_sets_follow_forward_refs_and_reload(database):
    store = await _open(database)
    vm1 = store.create("VM", {"name_label": "1"})
    vm2 = store.create("VM", {"name_label": "2"})
    vbd = store.create("VBD", {"VM": vm1})
    store.update("VBD", vbd, {"VM": vm2})
    assert store.get("VM", vm1)["VBDs"] == [] and store.get("VM", vm2)["VBDs"] == [vbd]
    other = store.create("VBD", {"VM": vm2})
    store.destroy("VBD", vbd)
    assert store.get("VM", vm2)["VBDs"] == [other]
    await store.close()
    again = await _open(database)
    assert again.get("VM", vm2)["VBDs"] == [other]
    assert again.get("VM", vm2)["uuid"] == store.get("VM", vm2)["uuid"]
    await again.close()


async def test_group_commit_and_sync(database):
    store = await _open(database)
    refs = [store.create("network", {"name_label": str(i)}) for i in range(200)]
    await store.sync()
    await store.close()
    again = await _open(database)
    assert set(again.all("network")) == set(refs)
    await again.close()


async def test_records_are_never_mutated_in_place(database):
    store = await _open(database)
    vm = store.create("VM", {"name_label": "x"})
    snapshot = store.get("VM", vm)
    store.update("VM", vm, {"name_label": "y"})
    assert snapshot["name_label"] == "x"
    await store.close()


async def test_a_value_no_row_could_hold_is_refused_and_undone(database):
    store = await _open(database)
    vm = store.create("VM", {"name_label": "a", "other_config": {"k": "v"}})
    for change in ({"name_description": "x\udc80"}, {"other_config": {"k": "\ud800"}},
                   {"tags": ["ok", "\udfff"]}):
        with pytest.raises(XenAPIError) as e:
            with store.transaction():
                store.update("VM", vm, {"name_label": "changed"})
                store.update("VM", vm, change)
        assert e.value.code == "INVALID_VALUE"
        assert store.get("VM", vm)["name_label"] == "a"
    assert store.get("VM", vm)["other_config"] == {"k": "v"}
    store.update("VM", vm, {"name_description": "caf\u00e9 \U0001f600"})   # real text is fine
    await store.sync()
    await store.close()


class _FailingOnce:
    """The engine, failing its next commit half-way as a full or broken disk would: the first
    row is written, then the write fails (the engine's transaction must undo that row)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.fail = True

    def commit(self, ops):
        if not self.fail:
            return self.engine.commit(ops)
        self.fail = False

        def first_then_fail():
            for i, op in enumerate(ops):
                if i == 1:
                    raise OSError(5, "Input/output error")
                yield op
        return self.engine.commit(first_then_fail())

    def close(self):
        self.engine.close()


async def test_a_failed_commit_undoes_the_change_in_memory(database):
    events = EventHub()
    store = await _open(database, events)
    vm = store.create("VM", {"name_label": "kept"})
    await store.sync()
    since = events.last_id
    real = store._writer.engine
    store._writer.engine = _FailingOnce(real)
    store.update("VM", vm, {"name_label": "lost"})
    vbd = store.create("VBD", {"VM": vm})
    assert store.get("VM", vm)["VBDs"] == [vbd]
    with pytest.raises(XenAPIError) as e:
        await store.sync()
    assert e.value.code == "INTERNAL_ERROR" and "database write failed" in e.value.params[0]
    assert store.get("VM", vm)["name_label"] == "kept"          # as the database has it
    assert store.find("VBD", vbd) is None and store.get("VM", vm)["VBDs"] == []
    # an event.from since the failed change sees the VM as it is again, the VBD never was
    assert [(c[0], c[1], c[2]) for c in events.changes_since(since, Subscription(["*"]))] == \
        [("VM", vm, "mod")]
    store._writer.engine = real
    store.update("VM", vm, {"name_description": "later"})
    await store.sync()
    await store.close()
    again = await _open(database)             # the database holds what memory says
    assert again.get("VM", vm)["name_label"] == "kept"
    assert again.get("VM", vm)["name_description"] == "later" and not again.all("VBD")
    await again.close()
    again = await _open(database)
    assert again.get("VM", vm)["name_label"] == "kept"
    assert again.get("VM", vm)["name_description"] == "later" and again.all("VBD") == {}
    await again.close()


# --- agents sharing one PostgreSQL database ---------------------------------------------------

async def _until(predicate, what: str, timeout: float = 10.0) -> float:
    """Seconds until `predicate()` held (the loop runs meanwhile: deliveries land on it)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < timeout, f"never saw {what}"
        await asyncio.sleep(0.002)
    return loop.time() - start


async def test_stores_on_one_postgresql_database_follow_each_other(postgres):
    url = postgres.new_database()
    a_events, b_events = EventHub(), EventHub()
    a, b = await _open(url, a_events), await _open(url, b_events)
    try:
        since = b_events.last_id
        start = asyncio.get_running_loop().time()
        vm = a.create("VM", {"name_label": "made on a"})
        vbd = a.create("VBD", {"VM": vm})
        await _until(lambda: b.find("VBD", vbd) is not None and b.find("VM", vm),
                     "a's VM and VBD on b")
        took = asyncio.get_running_loop().time() - start
        print(f"a's change seen by b {took * 1000:.1f} ms after it was made (commit included)")
        assert b.get("VM", vm)["VBDs"] == [vbd]               # b derives the reverse set
        assert b.ref_of_uuid("VM", a.get("VM", vm)["uuid"]) == vm
        got = {(c[0], c[1], c[2]) for c in b_events.changes_since(since, Subscription(["*"]))}
        assert {("VM", vm, "add"), ("VBD", vbd, "add")} <= got    # b's clients see events
        b.update("VM", vm, {"name_label": "renamed on b"})
        await b.sync()
        await _until(lambda: a.get("VM", vm)["name_label"] == "renamed on b", "b's rename on a")
        a.destroy("VBD", vbd)
        await a.sync()
        await _until(lambda: b.find("VBD", vbd) is None, "a's delete on b")
        assert b.get("VM", vm)["VBDs"] == []
        # an older change than this agent's own committed write of a record is not applied:
        # b renamed the VM after a's create, so a's create row (its id is lower) loses
        b._remote([("VM", vm, None, 1)])
        assert b.find("VM", vm) is not None
    finally:
        await a.close()
        await b.close()
    again = await _open(url)                 # and the database holds what both agreed on
    assert again.get("VM", vm)["name_label"] == "renamed on b" and not again.all("VBD")
    await again.close()


async def test_a_lost_postgresql_connection_is_made_again_and_nothing_is_missed(postgres):
    """The server drops every connection (as a restart or a network cut would): the next
    commit reconnects and commits, and the follower reconnects and catches up from the change
    log, so a change made while it was away still arrives."""
    url = postgres.new_database()
    name = urllib.parse.urlsplit(url).path.lstrip("/")
    a, b = await _open(url), await _open(url)
    try:
        vm = a.create("VM", {"name_label": "before"})
        await a.sync()
        await _until(lambda: b.find("VM", vm) is not None, "the VM on b")
        killed = postgres.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        assert int(killed) == 4                     # each store's writer and follower
        a.update("VM", vm, {"name_label": "after the cut"})
        await a.sync()                               # committed on a new connection
        await _until(lambda: b.get("VM", vm)["name_label"] == "after the cut",
                     "the change made while b's follower was away")
    finally:
        await a.close()
        await b.close()
    again = await _open(url)
    assert again.get("VM", vm)["name_label"] == "after the cut"
    await again.close()
