"""Three agents for a pool on loopback: 127.0.0.1, .2 and .3 on one port (a pool's hosts
share their port), host 1 on a PostgreSQL database, hosts 2 and 3 alone until they join
(each with its own root password)."""

from __future__ import annotations

import socket
from pathlib import Path

import XenAPI

from tests.server import PASSWORD, Server

__all__ = ["ADDRESSES", "Pool", "free_port"]

ADDRESSES = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def free_port() -> int:
    """A port free on the three addresses."""
    for _ in range(50):
        socks = []
        try:
            first = socket.socket()
            first.bind((ADDRESSES[0], 0))
            socks.append(first)
            port = first.getsockname()[1]
            for addr in ADDRESSES[1:]:
                s = socket.socket()
                socks.append(s)
                s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on 127.0.0.1-3")


class Pool:
    def __init__(self, root: Path, database: str, *extra: str) -> None:
        self.port = free_port()
        self.database = database
        # host 1 makes the pool (on PostgreSQL); 2 and 3 start alone, on SQLite, each with its
        # own root password (after joining, the pool's is theirs)
        self.hosts = [
            Server(root / "h1", "--database", database, *extra,
                   listen=f"{ADDRESSES[0]}:{self.port}"),
            Server(root / "h2", *extra, listen=f"{ADDRESSES[1]}:{self.port}", password="two-2"),
            Server(root / "h3", *extra, listen=f"{ADDRESSES[2]}:{self.port}",
                   password="three-3")]

    def url(self, i: int) -> str:
        return f"http://{ADDRESSES[i]}:{self.port}"

    def login(self, i: int, password: str = PASSWORD) -> XenAPI.Session:
        s = XenAPI.Session(self.url(i))
        s.xenapi.login_with_password("root", password, "2.21", "tests")
        return s

    def join(self) -> None:
        """Hosts 2 and 3 join host 1's pool (their agents start again on its database)."""
        for i in (1, 2):
            self.login(i, self.hosts[i].password).xenapi.pool.join(ADDRESSES[0], "root",
                                                                   PASSWORD)
            self.hosts[i].wait_ready()
