"""Store: undo on failure, derived reverse sets, durable reload, group commit."""

from __future__ import annotations

import sqlite3

import pytest

from httpd.model.errors import XenAPIError
from httpd.model.events import EventHub, Subscription
from httpd.model.store import Store


async def _open(path) -> Store:
    store = Store(str(path), EventHub())
    store.open()
    return store


async def test_transaction_undo_leaves_nothing(tmp_path):
    store = await _open(tmp_path / "db")
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


async def test_reverse_sets_follow_forward_refs_and_reload(tmp_path):
    store = await _open(tmp_path / "db")
    vm1 = store.create("VM", {"name_label": "1"})
    vm2 = store.create("VM", {"name_label": "2"})
    vbd = store.create("VBD", {"VM": vm1})
    store.update("VBD", vbd, {"VM": vm2})
    assert store.get("VM", vm1)["VBDs"] == [] and store.get("VM", vm2)["VBDs"] == [vbd]
    other = store.create("VBD", {"VM": vm2})
    store.destroy("VBD", vbd)
    assert store.get("VM", vm2)["VBDs"] == [other]
    await store.close()
    again = await _open(tmp_path / "db")
    assert again.get("VM", vm2)["VBDs"] == [other]
    assert again.get("VM", vm2)["uuid"] == store.get("VM", vm2)["uuid"]
    await again.close()


async def test_group_commit_and_sync(tmp_path):
    store = await _open(tmp_path / "db")
    refs = [store.create("network", {"name_label": str(i)}) for i in range(200)]
    await store.sync()
    await store.close()
    again = await _open(tmp_path / "db")
    assert set(again.all("network")) == set(refs)
    await again.close()


async def test_records_are_never_mutated_in_place(tmp_path):
    store = await _open(tmp_path / "db")
    vm = store.create("VM", {"name_label": "x"})
    snapshot = store.get("VM", vm)
    store.update("VM", vm, {"name_label": "y"})
    assert snapshot["name_label"] == "x"
    await store.close()


async def test_a_value_no_row_could_hold_is_refused_and_undone(tmp_path):
    store = await _open(tmp_path / "db")
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


class _FailingConnection:
    """The database's connection, failing its next commit as a full or broken disk would."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.fail = True

    def __enter__(self):
        return self.conn.__enter__()

    def __exit__(self, *exc):
        return self.conn.__exit__(*exc)

    def execute(self, *args):
        if self.fail:
            self.fail = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(*args)


async def test_a_failed_commit_undoes_the_change_in_memory(tmp_path):
    events = EventHub()
    store = Store(str(tmp_path / "db"), events)
    store.open()
    vm = store.create("VM", {"name_label": "kept"})
    await store.sync()
    since = events.last_id
    real = store._writer.conn
    store._writer.conn = _FailingConnection(real)
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
    store._writer.conn = real
    store.update("VM", vm, {"name_description": "later"})
    await store.sync()
    await store.close()
    again = await _open(tmp_path / "db")
    assert again.get("VM", vm)["name_label"] == "kept"
    assert again.get("VM", vm)["name_description"] == "later" and again.all("VBD") == {}
    await again.close()
