"""Typed, immutable RFB events and the pixel format record.

Each dataclass validates itself in its constructor, so an invalid event cannot
exist; the parser turns a constructor's `LocalProtocolError` into a
`RemoteProtocolError` when the values came off the wire.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import LocalProtocolError

__all__ = [
    "PixelFormat",
    "Event",
    "VersionAgreed",
    "SecurityChosen",
    "ClientInit",
    "SetPixelFormat",
    "SetEncodings",
    "FramebufferUpdateRequest",
    "KeyEvent",
    "PointerEvent",
    "ClientCutText",
    "QemuMessage",
    "RFB_VERSIONS",
    "SECURITY_NONE",
]

RFB_VERSIONS = ((3, 3), (3, 7), (3, 8))
SECURITY_NONE = 1
_PIXEL_FORMAT = struct.Struct(">BBBBHHHBBB3x")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise LocalProtocolError(message)


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """RFB PIXEL_FORMAT (16 bytes on the wire)."""

    bits_per_pixel: int = 32
    depth: int = 24
    big_endian: bool = False
    true_colour: bool = True
    red_max: int = 255
    green_max: int = 255
    blue_max: int = 255
    red_shift: int = 16
    green_shift: int = 8
    blue_shift: int = 0

    def __post_init__(self) -> None:
        _check(self.bits_per_pixel in (8, 16, 32), f"bits-per-pixel {self.bits_per_pixel} is not 8, 16 or 32")
        _check(0 < self.depth <= self.bits_per_pixel, f"depth {self.depth} not in 1..{self.bits_per_pixel}")
        if not self.true_colour:
            # A colour map is only workable with one byte per pixel (we send a 3-3-2 map).
            _check(self.bits_per_pixel == 8, "colour-map pixel formats are supported only at 8 bits per pixel")
            return
        for colour in ("red", "green", "blue"):
            cmax, shift = getattr(self, f"{colour}_max"), getattr(self, f"{colour}_shift")
            _check(cmax > 0 and (cmax & (cmax + 1)) == 0, f"{colour}-max {cmax} is not 2**n - 1")
            _check(shift < self.bits_per_pixel and (cmax << shift) < (1 << self.bits_per_pixel),
                   f"{colour}-max {cmax} << {colour}-shift {shift} does not fit in {self.bits_per_pixel} bits")

    @property
    def bytes_per_pixel(self) -> int:
        return self.bits_per_pixel // 8

    def pack(self) -> bytes:
        return _PIXEL_FORMAT.pack(
            self.bits_per_pixel, self.depth, int(self.big_endian), int(self.true_colour),
            self.red_max, self.green_max, self.blue_max,
            self.red_shift, self.green_shift, self.blue_shift,
        )

    @classmethod
    def unpack(cls, data: bytes) -> "PixelFormat":
        bpp, depth, be, tc, rm, gm, bm, rs, gs, bs = _PIXEL_FORMAT.unpack(data)
        return cls(bpp, depth, be != 0, tc != 0, rm, gm, bm, rs, gs, bs)


class Event:
    """Marker base class for everything `RfbServerConnection.next_event` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class VersionAgreed(Event):
    version: tuple[int, int]

    def __post_init__(self) -> None:
        _check(self.version in RFB_VERSIONS, f"RFB version {self.version} is not one of {RFB_VERSIONS}")


@dataclass(frozen=True, slots=True)
class SecurityChosen(Event):
    security_type: int

    def __post_init__(self) -> None:
        _check(self.security_type == SECURITY_NONE, f"security type {self.security_type} is not None (1)")


@dataclass(frozen=True, slots=True)
class ClientInit(Event):
    shared: bool


@dataclass(frozen=True, slots=True)
class SetPixelFormat(Event):
    pixel_format: PixelFormat


@dataclass(frozen=True, slots=True)
class SetEncodings(Event):
    encodings: tuple[int, ...]

    def __post_init__(self) -> None:
        _check(all(-(1 << 31) <= e < (1 << 31) for e in self.encodings), "encoding out of S32 range")


@dataclass(frozen=True, slots=True)
class FramebufferUpdateRequest(Event):
    incremental: bool
    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        _check(all(0 <= v <= 0xFFFF for v in (self.x, self.y, self.width, self.height)),
               "update-request rectangle out of U16 range")


@dataclass(frozen=True, slots=True)
class KeyEvent(Event):
    down: bool
    keysym: int

    def __post_init__(self) -> None:
        _check(0 <= self.keysym <= 0xFFFFFFFF, f"keysym {self.keysym} out of U32 range")


@dataclass(frozen=True, slots=True)
class PointerEvent(Event):
    buttons: int
    x: int
    y: int

    def __post_init__(self) -> None:
        _check(0 <= self.buttons <= 0xFF, "button mask out of U8 range")
        _check(0 <= self.x <= 0xFFFF and 0 <= self.y <= 0xFFFF, "pointer position out of U16 range")


@dataclass(frozen=True, slots=True)
class ClientCutText(Event):
    text: bytes


@dataclass(frozen=True, slots=True)
class QemuMessage(Event):
    """QEMU client message (type 255); parsed so the stream stays in sync, then ignored."""

    subtype: int
    payload: bytes
