"""A text console as a plain byte stream (xapi's `vt100` protocol), the asyncio adapter: on a Unix
socket of mode 0600 (only the agent's user reaches it) or on loopback TCP.

Each reader first gets `greeting()` (the screen so far), then every `send()`; what it types goes
to `on_input`.  A reader whose unsent backlog passes `backlog` bytes is dropped, so a stalled one
never makes the server buffer without end.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

__all__ = ["Vt100Server"]


class Vt100Server:
    def __init__(self, greeting: Callable[[], bytes], *,
                 on_input: Callable[[str], None] | None = None, backlog: int = 2**20) -> None:
        self.greeting = greeting
        self.on_input = on_input
        self.backlog = backlog
        self._server: asyncio.AbstractServer | None = None
        self._readers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> tuple[str, int] | str | None:
        if self._server is None or not self._server.sockets:
            return None
        name = self._server.sockets[0].getsockname()
        return name if isinstance(name, str) else name[:2]

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    async def start(self, host: str = "127.0.0.1", port: int = 0, *,
                    path: str | None = None) -> None:
        """Listen on the Unix socket `path` (mode 0600) if given, else on host:port."""
        if path is not None:
            self._server = await asyncio.start_unix_server(self._serve, path, backlog=1024)
            os.chmod(path, 0o600)
        else:
            self._server = await asyncio.start_server(self._serve, host, port, backlog=1024)

    def send(self, data: bytes) -> None:
        for w in list(self._readers):
            if w.transport.get_write_buffer_size() > self.backlog:
                w.transport.abort()
                self._readers.discard(w)
            else:
                w.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        writer.write(self.greeting())
        self._readers.add(writer)
        try:
            while data := await reader.read(4096):
                if self.on_input is not None:
                    self.on_input(data.decode("utf-8", "replace").replace("\r\n", "\r"))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._readers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for w in list(self._readers):
            w.transport.abort()
        self._readers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
