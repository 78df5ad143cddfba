"""A join or an ejection cut short by a crash is resolved at the next start by whether the
pool's database holds the host (core.membership.resolve_database), against a real
PostgreSQL database."""

from __future__ import annotations

import json

import pytest

from httpd.config import Config
from httpd.core import membership


@pytest.fixture
def setup(postgres, tmp_path):
    url = postgres.new_database()
    name = url.split("?")[0].rsplit("/", 1)[1]
    postgres.sql('CREATE TABLE "host" (ref TEXT PRIMARY KEY, uuid TEXT)', name)
    config = Config(data_dir=tmp_path)
    config.host_uuid_path.write_text("h-uuid\n")
    membership.set_pool_secret(tmp_path, "own secret")

    def hold_host() -> None:
        postgres.sql("INSERT INTO \"host\" VALUES ('OpaqueRef:h', 'h-uuid')", name)
    return config, url, hold_host


def _member(config: Config) -> dict | None:
    return membership.read(config.data_dir)


def test_a_join_that_never_committed_leaves_the_host_alone(setup):
    config, url, _ = setup
    membership.write(config.data_dir, url, "joining", "pool secret")
    assert membership.resolve_database(config) == "sqlite"
    assert _member(config) is None
    assert membership.pool_secret(config.data_dir) == "own secret"


def test_a_join_that_committed_is_finished(setup):
    config, url, hold_host = setup
    hold_host()
    membership.write(config.data_dir, url, "joining", "pool secret")
    assert membership.resolve_database(config) == url
    assert _member(config) == {"database": url, "state": "member"}
    assert membership.pool_secret(config.data_dir) == "pool secret"


def test_an_ejection_the_pool_committed_is_finished(setup):
    config, url, _ = setup
    config.db_path.write_text("the pool's old copy")
    (config.data_dir / membership.EJECTED_DB).write_text("the host's own")
    membership.write(config.data_dir, url, "leaving")
    assert membership.resolve_database(config) == "sqlite"
    assert config.db_path.read_text() == "the host's own"
    assert _member(config) is None and not (config.data_dir / membership.EJECTED_DB).exists()


def test_an_ejection_that_never_committed_keeps_the_host_in_the_pool(setup):
    config, url, hold_host = setup
    hold_host()
    (config.data_dir / membership.EJECTED_DB).write_text("the host's own")
    membership.write(config.data_dir, url, "leaving")
    assert membership.resolve_database(config) == url
    assert json.loads((config.data_dir / "pool.json").read_text())["state"] == "member"
    assert not (config.data_dir / membership.EJECTED_DB).exists()
