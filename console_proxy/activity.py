"""Light, incremental scan of the client side of an RFB stream for user activity.

Only KeyEvent (4), PointerEvent (5) and QEMU (255) messages count as
activity (a viewer's periodic FramebufferUpdateRequests do not), so an idle
timeout can close abandoned consoles.  Anything we cannot follow (other
security types, unknown extension messages) switches the scanner to "opaque",
where every client byte counts: we fail open rather than cut a live session.
Sans-IO: feed bytes, get a bool.
"""

from __future__ import annotations

import enum
import re
import struct

from .errors import RemoteProtocolError
from .rfb import _READERS

__all__ = ["RfbActivityScanner"]

_ACTIVE_TYPES = frozenset((4, 5, 255))
_VERSION_RE = re.compile(rb"RFB 003\.(\d{3})\n")


class _Scan(enum.Enum):
    VERSION = enum.auto()       # client ProtocolVersion (12 bytes)
    SERVER_CHOICE = enum.auto() # 3.3: the server's U32 security type decides what follows
    SECURITY = enum.auto()      # 3.7/3.8: client's one-byte choice
    AUTH = enum.auto()          # VNC auth response (16 bytes)
    INIT = enum.auto()          # ClientInit (1 byte)
    MESSAGES = enum.auto()
    OPAQUE = enum.auto()


class RfbActivityScanner:
    """`feed_client(data)` -> True if data completed an activity message; `feed_server` for 3.3 only."""

    def __init__(self) -> None:
        self.state = _Scan.VERSION
        self._buf = bytearray()
        self._server = bytearray()  # first 16 server bytes: version + 3.3 security type

    @property
    def needs_server_bytes(self) -> bool:
        return len(self._server) < 16 and self.state in (_Scan.VERSION, _Scan.SERVER_CHOICE)

    def feed_server(self, data: bytes) -> None:
        if len(self._server) < 16:
            self._server += data[:16 - len(self._server)]

    def feed_client(self, data: bytes) -> bool:
        if self.state is _Scan.OPAQUE:
            return bool(data)
        self._buf += data
        active = False
        try:
            while self._step():
                if self.state is _Scan.MESSAGES and self._last_type in _ACTIVE_TYPES:
                    active = True
        except RemoteProtocolError:
            self.state = _Scan.OPAQUE
            self._buf.clear()
            return True
        if self.state is _Scan.OPAQUE:
            self._buf.clear()
            return True
        return active

    def _take(self, size: int) -> bytes | None:
        if len(self._buf) < size:
            return None
        chunk = bytes(self._buf[:size])
        del self._buf[:size]
        return chunk

    def _step(self) -> bool:
        """Consume one unit; False when more bytes are needed."""
        self._last_type = None
        state = self.state
        if state is _Scan.VERSION:
            raw = self._take(12)
            if raw is None:
                return False
            match = _VERSION_RE.fullmatch(raw)
            if match is None:
                self.state = _Scan.OPAQUE
            else:
                self.state = _Scan.SERVER_CHOICE if int(match[1]) < 7 else _Scan.SECURITY
            return True
        if state is _Scan.SERVER_CHOICE:
            if len(self._server) < 16:
                return False
            (chosen,) = struct.unpack_from(">I", self._server, 12)
            self.state = {1: _Scan.INIT, 2: _Scan.AUTH}.get(chosen, _Scan.OPAQUE)
            return True
        if state is _Scan.SECURITY:
            raw = self._take(1)
            if raw is None:
                return False
            self.state = {1: _Scan.INIT, 2: _Scan.AUTH}.get(raw[0], _Scan.OPAQUE)
            return True
        if state is _Scan.AUTH:
            if self._take(16) is None:
                return False
            self.state = _Scan.INIT
            return True
        if state is _Scan.INIT:
            if self._take(1) is None:
                return False
            self.state = _Scan.MESSAGES
            return True
        if state is _Scan.MESSAGES:
            if not self._buf:
                return False
            reader = _READERS.get(self._buf[0])
            if reader is None:
                self.state = _Scan.OPAQUE
                return False
            with memoryview(self._buf) as view:
                result = reader(view)
            if result is None:
                return False
            msg_type = self._buf[0]
            del self._buf[:result[1]]
            self._last_type = msg_type
            return True
        return False
