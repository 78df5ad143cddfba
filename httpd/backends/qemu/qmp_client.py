"""The asyncio adapter of `qmp`: one QMP connection over a Unix socket, commands awaited by
their reply, events handed to a callback as they come.

The reader task owns the socket's input: it feeds the sans-IO connection and resolves each
command's future by id. When the connection ends (QEMU exited, the socket closed), every
command still waiting fails with ConnectionError, and so does every later one.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from .qmp import QmpConnection, QmpError, QmpEvent, Reply

__all__ = ["QmpClient"]


class QmpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_event: Callable[[QmpEvent], None] | None) -> None:
        self._reader, self._writer = reader, writer
        self._conn = QmpConnection()
        self._waiting: dict[int, tuple[str, asyncio.Future]] = {}
        self._ready = asyncio.get_running_loop().create_future()
        self._on_event = on_event
        self.closed: BaseException | None = None
        self.version: dict = {}
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, path: str, *, timeout: float = 10.0,
                      on_event: Callable[[QmpEvent], None] | None = None) -> "QmpClient":
        """Connect and finish the handshake (the greeting, then qmp_capabilities)."""
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
            client = cls(reader, writer, on_event)
            try:
                await asyncio.shield(client._ready)
            except BaseException:
                await client.close()
                raise
        return client

    async def execute(self, name: str, **arguments: Any) -> Any:
        """Run one command; its `return`, or QmpError for its `error` reply."""
        if self.closed is not None:
            raise ConnectionError(f"the QMP connection is closed ({self.closed})")
        cid, data = self._conn.command(name, arguments or None)
        fut = asyncio.get_running_loop().create_future()
        self._waiting[cid] = (name, fut)
        self._writer.write(data)
        await self._writer.drain()
        return await fut

    async def _read(self) -> None:
        error: BaseException = ConnectionError("QEMU closed its QMP socket")
        try:
            while chunk := await self._reader.read(1 << 16):
                events, out = self._conn.receive(chunk)
                if out:
                    self._writer.write(out)
                for ev in events:
                    self._dispatch(ev)
                if self._conn.state == "ready" and not self._ready.done():
                    self._ready.set_result(None)
        except Exception as e:  # noqa: BLE001 - ends the connection; waiters are told
            error = e
        finally:
            self.closed = error
            for _, fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(str(error)))
            self._waiting.clear()
            if not self._ready.done():
                self._ready.set_exception(ConnectionError(str(error)))

    def _dispatch(self, ev) -> None:
        if isinstance(ev, Reply):
            name, fut = self._waiting.pop(ev.id, ("?", None))
            if fut is not None and not fut.done():
                if ev.ok:
                    fut.set_result(ev.result)
                else:
                    fut.set_exception(QmpError(name, ev.error or {}))
        elif isinstance(ev, QmpEvent):
            if self._on_event is not None:
                self._on_event(ev)
        else:                                     # the greeting
            self.version = ev.version

    async def wait_closed(self) -> None:
        """Until the connection ends (QEMU exited, or close() was called)."""
        await asyncio.wait([self._task])

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
