"""QMP (the QEMU Machine Protocol), sans-IO: fed bytes, it yields typed events; commands go out
as bytes. The asyncio adapter is `qmp_client`.

QMP is newline-delimited JSON. The server speaks first (a greeting with its version), the
client must send `qmp_capabilities` before any other command, and then every command gets
exactly one reply (`return` or `error`), matched here by the `id` sent with it. Asynchronous
events (`STOP`, `RESUME`, `SHUTDOWN`, `RESET`, ...) may arrive between replies.

States, in one table (`_TRANSITIONS`): greeting -> negotiating -> ready; anything the server
sends that does not fit is RemoteProtocolError, and the connection stays in the error state.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QmpConnection", "Greeting", "Reply", "QmpEvent", "QmpError", "RemoteProtocolError",
           "LocalProtocolError", "MAX_LINE"]

MAX_LINE = 16 << 20          # a reply line (query-blockstats of many disks is KiB)

GREETING, NEGOTIATING, READY, ERROR = "greeting", "negotiating", "ready", "error"
_TRANSITIONS = {(GREETING, NEGOTIATING), (NEGOTIATING, READY), (GREETING, ERROR),
                (NEGOTIATING, ERROR), (READY, ERROR)}


class RemoteProtocolError(Exception):
    """The server sent something that is not QMP."""


class LocalProtocolError(Exception):
    """This side misused the connection (a command before the handshake, after an error)."""


@dataclass(frozen=True)
class Greeting:
    version: dict
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Reply:
    id: int
    result: Any = None
    error: dict | None = None          # {"class": ..., "desc": ...}

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict = field(default_factory=dict)
    timestamp: float = 0.0


class QmpError(Exception):
    """A command's `error` reply."""

    def __init__(self, command: str, error: dict) -> None:
        super().__init__(f"{command}: {error.get('class', '?')}: {error.get('desc', '')}")
        self.command, self.error_class = command, error.get("class", "")
        self.desc = error.get("desc", "")


class QmpConnection:
    def __init__(self) -> None:
        self.state = GREETING
        self._buf = bytearray()
        self._ids = itertools.count(1)
        self._pending: dict[int, str] = {}       # id -> command, in flight
        self._negotiation: int | None = None

    def _goto(self, state: str) -> None:
        if (self.state, state) not in _TRANSITIONS:
            raise LocalProtocolError(f"cannot go from {self.state} to {state}")
        self.state = state

    # --- out ------------------------------------------------------------------------------
    def command(self, name: str, arguments: dict | None = None) -> tuple[int, bytes]:
        """(id, bytes to send) for one command; only once the handshake is done."""
        if self.state == ERROR:
            raise LocalProtocolError("the QMP connection is in the error state; close it")
        if self.state != READY:
            raise LocalProtocolError(f"no command before the handshake ({self.state})")
        return self._send(name, arguments)

    def _send(self, name: str, arguments: dict | None) -> tuple[int, bytes]:
        cid = next(self._ids)
        msg: dict = {"execute": name, "id": cid}
        if arguments:
            msg["arguments"] = arguments
        self._pending[cid] = name
        return cid, json.dumps(msg).encode() + b"\n"

    # --- in -------------------------------------------------------------------------------
    def receive(self, data: bytes) -> tuple[list[Greeting | Reply | QmpEvent], bytes]:
        """The events these bytes complete, and any bytes to send now (the handshake's)."""
        if self.state == ERROR:
            raise LocalProtocolError("the QMP connection is in the error state; close it")
        self._buf += data
        events: list[Greeting | Reply | QmpEvent] = []
        out = b""
        try:
            while (nl := self._buf.find(b"\n")) >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[:nl + 1]
                if line.strip():
                    event, reply_bytes = self._line(line)
                    if event is not None:
                        events.append(event)
                    out += reply_bytes
            if len(self._buf) > MAX_LINE:
                raise RemoteProtocolError(f"a QMP line longer than {MAX_LINE} bytes")
        except RemoteProtocolError:
            self.state = ERROR
            raise
        return events, out

    def _line(self, line: bytes) -> tuple[Greeting | Reply | QmpEvent | None, bytes]:
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise RemoteProtocolError(f"not JSON: {line[:80]!r} ({e})") from None
        if not isinstance(msg, dict):
            raise RemoteProtocolError(f"not a JSON object: {line[:80]!r}")
        if self.state == GREETING:
            qmp = msg.get("QMP")
            if not isinstance(qmp, dict):
                raise RemoteProtocolError(f"expected the QMP greeting, got {line[:80]!r}")
            self._goto(NEGOTIATING)
            self._negotiation, out = self._send("qmp_capabilities", None)
            return Greeting(qmp.get("version", {}), tuple(qmp.get("capabilities", ()))), out
        if "event" in msg:
            ts = msg.get("timestamp", {})
            return QmpEvent(str(msg["event"]), msg.get("data") or {},
                            ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6), b""
        cid = msg.get("id")
        if cid not in self._pending or not ("return" in msg or "error" in msg):
            raise RemoteProtocolError(f"a reply to no command sent: {line[:80]!r}")
        name = self._pending.pop(cid)
        reply = Reply(cid, msg.get("return"), msg.get("error"))
        if cid == self._negotiation:
            if not reply.ok:
                raise RemoteProtocolError(f"qmp_capabilities refused: {reply.error}")
            self._goto(READY)
            return None, b""
        del name
        return reply, b""
