"""Events a reader emits.  Small frozen dataclasses that validate themselves, so an invalid
event cannot exist (h11 style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import XVAUsageError

__all__ = ["DiskDone", "End", "Metadata", "Warning_", "Write", "Zeros", "LAYOUT_APPLIANCE",
           "LAYOUT_XAPI", "Event"]

LAYOUT_APPLIANCE = "appliance-0.1"   # the SDK guide's ova.xml + dir-gzipped-chunks
LAYOUT_XAPI = "xapi-vsn2"            # XML-RPC ova.xml + Ref:N/%08d 1 MiB blocks


@dataclass(frozen=True, slots=True)
class Metadata:
    """``ova.xml`` was read.  ``appliance`` is the parsed model for the 0.1 layout; for the
    xapi layout the bytes are opaque here and the caller answers with ``expect_disks``."""

    layout: str
    ova_xml: bytes = field(repr=False)
    appliance: object | None = None

    def __post_init__(self) -> None:
        if self.layout not in (LAYOUT_APPLIANCE, LAYOUT_XAPI):
            raise XVAUsageError(f"unknown layout {self.layout!r}")
        if (self.layout == LAYOUT_APPLIANCE) != (self.appliance is not None):
            raise XVAUsageError("an appliance model goes with the 0.1 layout only")


@dataclass(frozen=True, slots=True)
class Write:
    """Write ``data`` at ``offset`` of ``disk``.  ``data`` may be a memoryview into a buffer
    that is reused after the caller moves on: write it (or copy it) before the next call."""

    disk: str
    offset: int
    data: bytes | memoryview = field(repr=False)

    def __post_init__(self) -> None:
        if self.offset < 0 or len(self.data) == 0:
            raise XVAUsageError("a write needs offset >= 0 and some data")


@dataclass(frozen=True, slots=True)
class Zeros:
    """``length`` zero bytes at ``offset``: leave a hole rather than writing zeros."""

    disk: str
    offset: int
    length: int

    def __post_init__(self) -> None:
        if self.offset < 0 or self.length <= 0:
            raise XVAUsageError("a zero span needs offset >= 0 and length > 0")


@dataclass(frozen=True, slots=True)
class DiskDone:
    """Every byte of ``disk`` (``size`` bytes) has been emitted."""

    disk: str
    size: int


@dataclass(frozen=True, slots=True)
class Warning_:
    """A problem tolerated because the caller asked for ``force`` (e.g. a checksum mismatch)."""

    message: str


@dataclass(frozen=True, slots=True)
class End:
    """The XVA ended cleanly: every expected disk is complete and the tar end was seen."""


Event = Metadata | Write | Zeros | DiskDone | Warning_ | End
