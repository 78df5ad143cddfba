"""Task garbage collection and the where-expression language."""

from __future__ import annotations

import datetime as dt

from httpd.core.implicit import parse_where
from httpd.core.tasks import COMPLETED_TTL, MAX_COMPLETED, PENDING_TTL


def test_where_language():
    rec = {"name_label": 'say "hi"', "is_a_template": True, "n": 3}
    assert parse_where("true")(rec) and not parse_where("false")(rec)
    assert parse_where('field "is_a_template" = "true"')(rec)
    assert parse_where('field "n" <> "4" and (field "n" = "3" or false)')(rec)
    assert parse_where(r'field "name_label" = "say \"hi\""')(rec)
    assert not parse_where('not field "n" = "3"')(rec)
    # "and" binds tighter than "or", both fold left
    assert parse_where("true or false and false")(rec)
    assert not parse_where("false and true or false")(rec)
    assert parse_where("false or false or true")(rec)


async def test_gc_rules(tmp_path):
    from httpd.app import open_services
    from httpd.config import Config

    async with open_services(Config(data_dir=tmp_path, root_password="x", demo=False)) \
            as (agent, _, _):
        tasks = agent.tasks
        now = dt.datetime.now(dt.timezone.utc).timestamp()
        old_done = tasks.create("old")
        tasks.succeed(old_done, "")
        agent.store.update("task", old_done, {
            "finished": dt.datetime.fromtimestamp(now - COMPLETED_TTL - 5, dt.timezone.utc)})
        stale = tasks.create("stale pending")
        agent.store.update("task", stale, {
            "created": dt.datetime.fromtimestamp(now - PENDING_TTL - 5, dt.timezone.utc)})
        young = [tasks.create(f"y{i}") for i in range(MAX_COMPLETED + 3)]
        for i, ref in enumerate(young):
            tasks.succeed(ref, "")
            agent.store.update("task", ref, {
                "finished": dt.datetime.fromtimestamp(now - 100 + i * 0.1, dt.timezone.utc)})
        running = tasks.create("running")
        assert tasks.gc(now) == 2 + 3
        left = agent.store.all("task")
        assert old_done not in left and stale not in left and running in left
        assert all(r not in left for r in young[:3]) and all(r in left for r in young[3:])
