"""Shared fixtures: a real server per test module (cheap to start, isolated data dir)."""

from __future__ import annotations

import pytest

from tests.server import Server


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
