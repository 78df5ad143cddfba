"""Store: undo on failure, derived reverse sets, durable reload, group commit."""

from __future__ import annotations

import asyncio

import pytest

from httpd.model.errors import XenAPIError
from httpd.model.events import EventHub
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
