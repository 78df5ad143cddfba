"""The two byte streams the agent keeps open to each QEMU besides QMP: the serial port (the
`vt100` console) and the guest agent's virtio-serial port.

QEMU's socket character devices take one client at a time, so the agent is that client and
fans out: `SerialRelay` keeps the last 64 KiB the guest wrote (a new `xe console` reader sees
the screen so far) and hands every reader's keys to the guest. `GuestReports` parses what the
in-guest agent writes (`key value` lines, a block ended by `.`), sans-IO.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Callable

from console_proxy.vt100 import Vt100Server

__all__ = ["SerialRelay", "GuestReports", "GuestChannel"]

HISTORY = 64 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


async def _open(path: str, attempts: int = 50) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    for i in range(attempts):
        try:
            return await asyncio.open_unix_connection(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


class SerialRelay:
    def __init__(self, path: str, backlog: int) -> None:
        self.path = path
        self.history = bytearray()
        self.server = Vt100Server(lambda: bytes(self.history), on_input=self._input,
                                  backlog=backlog)
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None

    async def start(self, listen_path: str) -> None:
        reader, self._writer = await _open(self.path)
        await self.server.start(path=listen_path)
        self._task = asyncio.get_running_loop().create_task(self._pump(reader))

    def _input(self, text: str) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(text.encode("utf-8", "replace"))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                self.history += chunk
                del self.history[:-HISTORY]
                self.server.send(chunk)

    def text(self) -> list[str]:
        plain = _ANSI.sub("", self.history.decode("utf-8", "replace"))
        return plain.split("\n")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
        await self.server.stop()


class GuestReports:
    """Fed bytes, yields each complete report as a dict: os, uname, uptime, memtotal,
    memfree (KiB) and nics [(mac, ip or "")]."""

    MAX_LINE = 4096
    MAX_NICS = 64          # a guest is not trusted: one report stays small

    def __init__(self) -> None:
        self._buf = b""
        self._current: dict = {"nics": []}

    def feed(self, data: bytes) -> list[dict]:
        self._buf += data
        done = []
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > self.MAX_LINE:          # not the agent's output: start over
            self._buf = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line == ".":
                done.append(self._current)
                self._current = {"nics": []}
                continue
            key, _, value = line.partition(" ")
            if key == "nic":
                if len(self._current["nics"]) >= self.MAX_NICS:
                    continue
                mac, _, ip = value.partition(" ")
                self._current["nics"].append((mac.lower(), "" if ip in ("", "-") else ip))
            elif key in ("os", "uname", "uptime", "memtotal", "memfree") and \
                    len(self._current) < 16:
                self._current[key] = value
        return done


class GuestChannel:
    """The agent's end of the guest agent's port: the newest report, and a callback when
    what it says changed."""

    def __init__(self, path: str, on_report: Callable[[dict], None]) -> None:
        self.path = path
        self.on_report = on_report
        self.latest: dict | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        reader, writer = await _open(self.path)
        self._writer = writer
        self._task = asyncio.get_running_loop().create_task(self._pump(reader))

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        parser = GuestReports()
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                for report in parser.feed(chunk):
                    before = self.latest
                    self.latest = report
                    if before is None or _identity(before) != _identity(report):
                        self.on_report(report)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._writer.close()


def _identity(report: dict) -> tuple:
    """What, when it changes, is worth a VM_guest_metrics update (not the uptime)."""
    return report.get("os"), report.get("uname"), tuple(report.get("nics", ()))
