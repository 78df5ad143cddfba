"""Sans-IO RFB (VNC) server core: versions 3.3, 3.7 and 3.8, security None, Raw encoding.

Feed client bytes with `receive_data`, pull typed events with `next_event`,
send what `data_to_send` returns.  Phases advance only through `_TRANSITIONS`;
an event not listed for the current phase is a bug and raises.  Framebuffer
updates are produced by `framebuffer_update(frame, serial)`, which answers the
client's pending request: non-incremental at once, incremental only when the
requested area differs from what this client last received.
"""

from __future__ import annotations

import enum
import re
import struct

import numpy as np

from .errors import LocalProtocolError, RemoteProtocolError
from .pixels import colour_map_entries, encode_pixels
from .rfb_events import (
    RFB_VERSIONS,
    SECURITY_NONE,
    ClientCutText,
    ClientInit,
    Event,
    FramebufferUpdateRequest,
    KeyEvent,
    PixelFormat,
    PointerEvent,
    QemuMessage,
    SecurityChosen,
    SetEncodings,
    SetPixelFormat,
    VersionAgreed,
)

__all__ = ["Phase", "RfbServerConnection", "NEED_DATA", "MAX_CUT_TEXT"]

MAX_CUT_TEXT = 1 << 20  # a bigger clipboard paste is refused rather than buffered


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class Phase(enum.Enum):
    VERSION = "version"    # waiting for the client's ProtocolVersion
    SECURITY = "security"  # waiting for the client's security type (3.7/3.8); 3.3: server decides
    INIT = "init"          # waiting for ClientInit
    NORMAL = "normal"      # client messages
    ERROR = "error"        # bad input or misuse: every later call fails fast


_NORMAL_EVENTS = (SetPixelFormat, SetEncodings, FramebufferUpdateRequest, KeyEvent,
                  PointerEvent, ClientCutText, QemuMessage)

# Every legal transition, in one place.
_TRANSITIONS: dict[Phase, dict[type[Event], Phase]] = {
    Phase.VERSION: {VersionAgreed: Phase.SECURITY},
    Phase.SECURITY: {SecurityChosen: Phase.INIT},
    Phase.INIT: {ClientInit: Phase.NORMAL},
    Phase.NORMAL: {cls: Phase.NORMAL for cls in _NORMAL_EVENTS},
    Phase.ERROR: {},
}

_VERSION_RE = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
_U32 = struct.Struct(">I")


def _negotiate(client: tuple[int, int], server: tuple[int, int]) -> tuple[int, int]:
    """Map the client's answer onto 3.3/3.7/3.8 (3.4-3.6 mean 3.3), never above ours."""
    major, minor = client
    if major != 3 or minor < 3:
        raise RemoteProtocolError(f"client asked for RFB {major}.{minor}; this server speaks 3.3-{server[1]}")
    agreed = (3, 3) if minor < 7 else (3, 7) if minor == 7 else (3, 8)
    return min(agreed, server)


def _remote(build, *args):
    """Build an event from wire values: a constructor's complaint is the peer's fault."""
    try:
        return build(*args)
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message) from None


# --- normal-phase readers: return (event, size) or None when more bytes are needed ---

def _read_set_pixel_format(buf: memoryview):
    if len(buf) < 20:
        return None
    return _remote(SetPixelFormat, _remote(PixelFormat.unpack, bytes(buf[4:20]))), 20


def _read_set_encodings(buf: memoryview):
    if len(buf) < 4:
        return None
    (count,) = struct.unpack_from(">H", buf, 2)
    size = 4 + 4 * count
    if len(buf) < size:
        return None
    return SetEncodings(struct.unpack_from(f">{count}i", buf, 4)), size


def _read_update_request(buf: memoryview):
    if len(buf) < 10:
        return None
    inc, x, y, w, h = struct.unpack_from(">BHHHH", buf, 1)
    return FramebufferUpdateRequest(inc != 0, x, y, w, h), 10


def _read_key_event(buf: memoryview):
    if len(buf) < 8:
        return None
    down, keysym = struct.unpack_from(">B2xI", buf, 1)
    return KeyEvent(down != 0, keysym), 8


def _read_pointer_event(buf: memoryview):
    if len(buf) < 6:
        return None
    buttons, x, y = struct.unpack_from(">BHH", buf, 1)
    return PointerEvent(buttons, x, y), 6


def _read_cut_text(buf: memoryview):
    if len(buf) < 8:
        return None
    (length,) = struct.unpack_from(">I", buf, 4)
    if length > MAX_CUT_TEXT:
        raise RemoteProtocolError(f"ClientCutText of {length} bytes exceeds the {MAX_CUT_TEXT}-byte limit")
    if len(buf) < 8 + length:
        return None
    return ClientCutText(bytes(buf[8:8 + length])), 8 + length


def _qemu_size(buf: memoryview) -> int | None:
    """Length of a QEMU (255) message: 0 = extended key event, 1 = audio (op 0/1/2)."""
    subtype = buf[1]
    if subtype == 0:
        return 12
    if subtype == 1:
        if len(buf) < 4:
            return None
        (op,) = struct.unpack_from(">H", buf, 2)
        if op in (0, 1):
            return 4
        if op == 2:
            return 10
        raise RemoteProtocolError(f"unknown QEMU audio operation {op}")
    raise RemoteProtocolError(f"unknown QEMU client message sub-type {subtype}")


def _read_qemu(buf: memoryview):
    if len(buf) < 2:
        return None
    size = _qemu_size(buf)
    if size is None or len(buf) < size:
        return None
    return QemuMessage(buf[1], bytes(buf[2:size])), size


_READERS = {
    0: _read_set_pixel_format,
    2: _read_set_encodings,
    3: _read_update_request,
    4: _read_key_event,
    5: _read_pointer_event,
    6: _read_cut_text,
    255: _read_qemu,
}


class RfbServerConnection:
    """One client's RFB session, server side, without any I/O."""

    def __init__(self, width: int, height: int, *, name: str = "console",
                 version: tuple[int, int] = (3, 8),
                 pixel_format: PixelFormat = PixelFormat()) -> None:
        if version not in RFB_VERSIONS:
            raise LocalProtocolError(f"server version {version} is not one of {RFB_VERSIONS}")
        if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
            raise LocalProtocolError(f"framebuffer {width}x{height} out of range")
        self.width, self.height = width, height
        self.name = name.encode("utf-8")
        self.server_version = version
        self.version: tuple[int, int] | None = None
        self.pixel_format = pixel_format
        self.encodings: tuple[int, ...] = ()
        self.phase = Phase.VERSION
        self._in = bytearray()
        self._out = bytearray(b"RFB 003.%03d\n" % version[1])
        self._pending: FramebufferUpdateRequest | None = None
        self._last_frame: np.ndarray | None = None
        self._last_serial: object = None

    # ---- input -------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._check_usable()
        self._in += data

    def next_event(self) -> Event | _NeedData:
        """The next client event, or NEED_DATA; raises RemoteProtocolError on bad input."""
        self._check_usable()
        try:
            event = self._read()
        except RemoteProtocolError:
            self.phase = Phase.ERROR
            raise
        if event is not NEED_DATA:
            self._apply(event)
        return event

    def _check_usable(self) -> None:
        if self.phase is Phase.ERROR:
            raise LocalProtocolError("RFB connection is in the error state; close it")

    def _consume(self, size: int) -> bytes:
        chunk = bytes(self._in[:size])
        del self._in[:size]
        return chunk

    def _read(self) -> Event | _NeedData:
        if self.phase is Phase.VERSION:
            head = bytes(self._in[:4])
            if not b"RFB ".startswith(head):  # fail on garbage without waiting for 12 bytes
                raise RemoteProtocolError(f"bad ProtocolVersion {bytes(self._in[:12])!r}")
            if len(self._in) < 12:
                return NEED_DATA
            raw = self._consume(12)
            match = _VERSION_RE.fullmatch(raw)
            if not match:
                raise RemoteProtocolError(f"bad ProtocolVersion {raw!r}")
            return _remote(VersionAgreed, _negotiate((int(match[1]), int(match[2])), self.server_version))
        if self.phase is Phase.SECURITY:
            if self.version == (3, 3):
                return SecurityChosen(SECURITY_NONE)  # 3.3: the server decides, nothing to read
            if not self._in:
                return NEED_DATA
            chosen = self._consume(1)[0]
            if chosen != SECURITY_NONE:
                if self.version == (3, 8):
                    reason = b"only security type None (1) is offered"
                    self._out += _U32.pack(1) + _U32.pack(len(reason)) + reason
                raise RemoteProtocolError(f"client chose security type {chosen}, which was not offered")
            return SecurityChosen(chosen)
        if self.phase is Phase.INIT:
            if not self._in:
                return NEED_DATA
            return ClientInit(self._consume(1)[0] != 0)
        # Phase.NORMAL
        if not self._in:
            return NEED_DATA
        reader = _READERS.get(self._in[0])
        if reader is None:
            raise RemoteProtocolError(f"unknown client message type {self._in[0]}")
        with memoryview(self._in) as view:
            result = reader(view)
        if result is None:
            return NEED_DATA
        event, size = result
        del self._in[:size]
        return event

    def _apply(self, event: Event) -> None:
        next_phase = _TRANSITIONS[self.phase].get(type(event))
        if next_phase is None:
            self.phase = Phase.ERROR
            raise LocalProtocolError(f"{type(event).__name__} is not legal in phase {self.phase.value}")
        if isinstance(event, VersionAgreed):
            self.version = event.version
            if event.version == (3, 3):
                self._out += _U32.pack(SECURITY_NONE)
            else:
                self._out += bytes((1, SECURITY_NONE))
        elif isinstance(event, SecurityChosen):
            if self.version == (3, 8):
                self._out += _U32.pack(0)  # SecurityResult OK, sent even for None in 3.8
        elif isinstance(event, ClientInit):
            self._out += struct.pack(">HH", self.width, self.height) + self.pixel_format.pack()
            self._out += _U32.pack(len(self.name)) + self.name
        elif isinstance(event, SetPixelFormat):
            self.pixel_format = event.pixel_format
            self._last_frame = None  # the client's copy must be repainted in the new format
            if not event.pixel_format.true_colour:
                self._out += colour_map_entries()
        elif isinstance(event, SetEncodings):
            self.encodings = event.encodings  # Raw always works; pseudo-encodings are tolerated
        elif isinstance(event, FramebufferUpdateRequest):
            if self._pending is None or not event.incremental:
                self._pending = event
        self.phase = next_phase

    # ---- output ------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def update_pending(self) -> bool:
        return self._pending is not None

    def framebuffer_update(self, frame: np.ndarray, serial: object = None) -> bool:
        """Answer the pending update request from `frame` (h, w, 3 uint8 RGB); True if bytes were queued.

        `serial` identifies the frame's content: an incremental request with an
        unchanged serial is held without comparing pixels.
        """
        self._check_usable()
        if self.phase is not Phase.NORMAL:
            raise LocalProtocolError(f"framebuffer update in phase {self.phase.value}")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise LocalProtocolError(f"frame of shape {frame.shape} does not match {self.width}x{self.height}")
        request = self._pending
        if request is None:
            return False
        x0, y0 = min(request.x, self.width), min(request.y, self.height)
        x1, y1 = min(request.x + request.width, self.width), min(request.y + request.height, self.height)
        rect = (x0, y0, x1, y1)
        if request.incremental and self._last_frame is not None:
            if serial is not None and serial == self._last_serial:
                return False
            rect = _changed_box(self._last_frame, frame, rect)
            if rect is None:
                self._last_serial = serial
                return False
        self._pending = None
        self._last_frame = frame.copy()
        self._last_serial = serial
        x0, y0, x1, y1 = rect
        if x1 <= x0 or y1 <= y0:
            self._out += struct.pack(">BxH", 0, 0)
            return True
        self._out += struct.pack(">BxHHHHHi", 0, 1, x0, y0, x1 - x0, y1 - y0, 0)
        self._out += encode_pixels(frame[y0:y1, x0:x1], self.pixel_format)
        return True

    def bell(self) -> None:
        self._check_usable()
        if self.phase is Phase.NORMAL:
            self._out += b"\x02"


def _changed_box(old: np.ndarray, new: np.ndarray, rect):
    """Bounding box of pixels that differ inside rect, or None."""
    x0, y0, x1, y1 = rect
    diff = np.any(old[y0:y1, x0:x1] != new[y0:y1, x0:x1], axis=2)
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(diff.any(axis=0))
    return x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1
