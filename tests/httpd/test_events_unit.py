"""EventHub: coalescing for event.from, bounded queue for event.next."""

from __future__ import annotations

import pytest

from httpd.model.errors import XenAPIError
from httpd.model.events import EventHub, Subscription


def test_coalesces_per_object_and_tells_add_from_mod():
    hub = EventHub()
    t0 = hub.last_id
    hub.publish("VM", "add", "r1", {})
    t1 = hub.last_id
    hub.publish("VM", "mod", "r1", {})
    hub.publish("VM", "mod", "r1", {})
    hub.publish("network", "add", "n1", {})
    sub = Subscription(["vm"])
    assert [(c, r, op) for c, r, op, _ in hub.changes_since(t0, sub)] == [("VM", "r1", "add")]
    assert [(c, r, op) for c, r, op, _ in hub.changes_since(t1, sub)] == [("VM", "r1", "mod")]
    assert hub.changes_since(hub.last_id, Subscription(["*"])) == []


def test_created_then_deleted_is_invisible_but_old_deletes_show():
    hub = EventHub()
    hub.publish("VM", "add", "old", {})
    t = hub.last_id
    hub.publish("VM", "add", "tmp", {})
    hub.publish("VM", "del", "tmp", None)
    hub.publish("VM", "del", "old", None)
    assert [(r, op) for _, r, op, _ in hub.changes_since(t, Subscription(["VM"]))] == [
        ("old", "del")]


def test_object_subscription():
    hub = EventHub()
    t = hub.last_id
    hub.publish("task", "add", "a", {})
    hub.publish("task", "add", "b", {})
    assert [r for _, r, _, _ in hub.changes_since(t, Subscription(["task/b"]))] == ["b"]


def test_bad_subscriptions_and_tokens():
    with pytest.raises(XenAPIError) as e:
        Subscription(["vmm"])
    assert e.value.code == "EVENT_SUBSCRIPTION_PARSE_FAILURE"
    with pytest.raises(XenAPIError) as e:
        EventHub().parse_token("abc")
    assert e.value.code == "EVENT_FROM_TOKEN_PARSE_FAILURE"


def test_next_queue_overflow_is_events_lost():
    hub = EventHub(queue_size=3)
    hub.register("s", Subscription(["*"]))
    hub.publish("VM", "add", "a", {"n": 1})
    assert [c.ref for c in hub.take_next("s")] == ["a"]
    for i in range(5):
        hub.publish("VM", "mod", "a", {"n": i})
    with pytest.raises(XenAPIError) as e:
        hub.take_next("s")
    assert e.value.code == "EVENTS_LOST"
    hub.publish("VM", "mod", "a", {"n": 9})
    assert [c.snapshot for c in hub.take_next("s")] == [{"n": 9}]


def test_task_and_metrics_do_not_reach_next():
    hub = EventHub()
    hub.register("s", Subscription(["*"]))
    hub.publish("task", "add", "t", {})
    hub.publish("VM_metrics", "mod", "m", {})
    hub.publish("VM", "mod", "v", {})
    assert [c.cls for c in hub.take_next("s")] == ["VM"]
    with pytest.raises(XenAPIError) as e:
        hub.take_next("unregistered")
    assert e.value.code == "SESSION_NOT_REGISTERED"


def test_event_next_keeps_snapshots_only_for_registrations_and_within_a_weight():
    """Issue 14, found by the load test: every change's snapshot stayed in event.next's queue
    (10,000 of them) even with nobody registered: 40,000-tag records grew the agent by
    100+ MiB in seconds. Now only registered sessions that want the object get them, and
    what the queued snapshots hold is bounded too."""
    hub = EventHub()
    big = {"tags": [f"t{i}" for i in range(40_000)]}
    for _ in range(50):
        hub.publish("VM", "mod", "vm1", big)
    assert len(hub._queue) == 0                       # nobody listens: nothing is kept
    hub.register("s", Subscription(["network"]))
    hub.publish("VM", "mod", "vm1", big)
    assert len(hub._queue) == 0                       # nor for someone who wants other things
    hub.register("s", Subscription(["vm"]))
    hub.max_queue_weight = 100_000
    for _ in range(5):
        hub.publish("VM", "mod", "vm1", big)
    assert len(hub._queue) == 2 and hub._queue_weight <= 100_000
    with pytest.raises(XenAPIError) as e:                 # the laggard is told, not misled
        hub.take_next("s")
    assert e.value.code == "EVENTS_LOST"
    hub.publish("VM", "mod", "vm1", {"tags": []})
    assert [c.ref for c in hub.take_next("s")] == ["vm1"]
