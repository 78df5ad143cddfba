"""Shared fixtures: a real server per test module (cheap to start, isolated data dir)."""

from __future__ import annotations

import pytest
from hypothesis import settings

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
