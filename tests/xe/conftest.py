"""Helpers for the `xe` tests: run the real console script as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_BIN = Path(sys.executable).parent / "xe"
XE = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "httpd.xe"]
ROOT = Path(__file__).resolve().parents[2]


def xe_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XE")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def run_xe(*args: str, env: dict[str, str], input: str | bytes | None = None,
           timeout: float = 60, text: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*XE, *args], env=env, input=input, capture_output=True, text=text,
                          timeout=timeout, cwd=env.get("HOME"))


class Xe:
    """`xe` bound to one server through the local socket (XE_SOCKET) and an empty HOME."""

    def __init__(self, server, home: Path) -> None:
        self.server = server
        self.home = home
        self.env = xe_env(home, XE_SOCKET=server.socket_path)

    def __call__(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        r = run_xe(*args, env=self.env, **kw)
        if check and r.returncode != 0:
            raise AssertionError(f"xe {' '.join(args)} failed ({r.returncode}):\n"
                                 f"{r.stdout}{r.stderr}")
        return r

    def out(self, *args: str) -> str:
        return self(*args).stdout.strip()

    def tcp(self, *args: str, password: str | None = None, check: bool = False):
        host, port = self.server.url.split("//")[1].rsplit(":", 1)
        return run_xe("-s", host, "-p", port, "-u", "root", "-pw",
                      password if password is not None else self.server.password, "--nossl",
                      *args, env=xe_env(self.home))


@pytest.fixture
def xe(server, tmp_path) -> Xe:
    home = tmp_path / "home"
    home.mkdir()
    return Xe(server, home)
