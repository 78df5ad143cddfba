"""Shared fixtures: a real server per test module (cheap to start, isolated data dir)."""

from __future__ import annotations

import pytest
from hypothesis import settings

from tests.postgres import PostgresCluster, postgres_installed
from tests.server import Server

# the fuzz tests (tests/test_fuzz.py) run the same examples every time: a failure reproduces
settings.register_profile("suite", derandomize=True, max_examples=150, database=None)
settings.load_profile("suite")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("xcp")).start()
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path):
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def xenapi(server):
    s = server.session()
    yield s
    try:
        s.xenapi.session.logout()
    except Exception:  # noqa: BLE001 - a test may have logged out already
        pass


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL 15 cluster for the whole run (each user takes a database of its own)."""
    if not postgres_installed():
        pytest.skip("PostgreSQL 15 (Debian's postgresql) is not installed")
    cluster = PostgresCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()
