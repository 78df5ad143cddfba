"""A throw-away PostgreSQL 15 cluster (Debian's binaries) for tests: `initdb` in a temp
directory (as the `postgres` user: initdb refuses root), listening on a Unix socket there and
on no TCP port, stopped at the end."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresCluster", "postgres_installed"]

BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_installed() -> bool:
    return (BIN / "initdb").exists() and _user() is not None


def _user() -> str | None:
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        return None


class PostgresCluster:
    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable            # fsync as a production server (benchmarks)
        self.root = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root       # short: a Unix socket path must fit in 107 bytes
        self.user = _user()
        self._seq = 0

    def _as_postgres(self, *cmd: str) -> subprocess.CompletedProcess:
        run = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        return subprocess.run([*run, *cmd], check=True, capture_output=True, text=True)

    def start(self) -> "PostgresCluster":
        pw = pwd.getpwnam(self.user)
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._as_postgres(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8")
        opts = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' "
                f"-c fsync={'on' if self.durable else 'off'} -c synchronous_commit=on")
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w",
                          "-l", str(self.root / "log"), "start")
        return self

    def stop(self) -> None:
        try:
            self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                              "-w", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self._seq += 1
        name = f"t{self._seq}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return subprocess.run([str(BIN / "psql"), "-X", "-q", "-A", "-t", "-v",
                               "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-U", "postgres",
                               "-d", database, "-c", statement],
                              check=True, capture_output=True, text=True).stdout.strip()
