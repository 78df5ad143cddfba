"""What an RRD is, as values: consolidation functions, data-source types, the archive layouts
of the four levels (5 s, 1 min, 1 h, 1 day), data sources and the exported state of an RRD.
The engine (:mod:`rrd.engine`) works on them; persistence and renderers read them.  Pure.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field

import numpy as np

from .errors import RRDUsageError

__all__ = [
    "STEP", "HEARTBEAT", "NAN", "DS_TYPE_CODE", "CF", "DSType", "Archive", "Layout", "LAYOUT",
    "LAYOUT_MIN_MAX", "DataSource", "DSState", "ArchiveState", "RRDState", "Xport",
]

STEP = 5
HEARTBEAT = 300
NAN = float("nan")


class CF(enum.Enum):
    AVERAGE = "AVERAGE"
    MIN = "MIN"
    MAX = "MAX"


class DSType(enum.Enum):
    GAUGE = "GAUGE"
    DERIVE = "DERIVE"
    ABSOLUTE = "ABSOLUTE"


DS_TYPE_CODE = {DSType.GAUGE: 0, DSType.DERIVE: 1, DSType.ABSOLUTE: 2}   # the engine's column codes


@dataclass(frozen=True)
class Archive:
    """One RRA: ``rows`` consolidated points of ``pdp_per_row`` primary points."""

    cf: CF
    pdp_per_row: int
    rows: int
    xff: float

    def __post_init__(self) -> None:
        if not isinstance(self.cf, CF):
            raise RRDUsageError(f"archive cf must be a CF, not {self.cf!r}")
        if self.pdp_per_row < 1 or self.rows < 1:
            raise RRDUsageError(f"archive needs pdp_per_row >= 1 and rows >= 1: {self}")
        if not 0.0 <= self.xff <= 1.0:
            raise RRDUsageError(f"xff must be within [0, 1]: {self.xff}")


@dataclass(frozen=True)
class Layout:
    """The archives of one kind of RRD; all RRDs of a layout share a group."""

    archives: tuple[Archive, ...]
    step: int = STEP

    def __post_init__(self) -> None:
        if self.step < 1 or not self.archives:
            raise RRDUsageError("a layout needs step >= 1 and at least one archive")


def _levels(with_min_max: bool) -> Layout:
    levels = ((1, 120), (12, 120), (720, 168), (17280, 366))
    archives: list[Archive] = []
    for i, (pdp, rows) in enumerate(levels):
        if not with_min_max:
            archives.append(Archive(CF.AVERAGE, pdp, rows, 0.5))
        elif i == 0:
            archives.append(Archive(CF.AVERAGE, pdp, rows, 0.5))
        else:
            archives.extend(Archive(cf, pdp, rows, 1.0) for cf in (CF.AVERAGE, CF.MIN, CF.MAX))
    return Layout(tuple(archives))


LAYOUT = _levels(False)
LAYOUT_MIN_MAX = _levels(True)

_DS_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}\Z")


@dataclass(frozen=True)
class DataSource:
    """A data source definition; ``min``/``max`` NaN mean unbounded."""

    name: str
    type: DSType = DSType.GAUGE
    min: float = NAN
    max: float = NAN
    units: str = ""
    description: str = ""
    heartbeat: int = HEARTBEAT

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _DS_NAME.match(self.name):
            raise RRDUsageError(f"invalid data source name {self.name!r}")
        if not isinstance(self.type, DSType):
            raise RRDUsageError(f"data source type must be a DSType, not {self.type!r}")
        if self.heartbeat < 1:
            raise RRDUsageError(f"heartbeat must be >= 1: {self.heartbeat}")
        if self.min > self.max:
            raise RRDUsageError(f"{self.name}: min {self.min} > max {self.max}")

    def same_definition(self, other: "DataSource") -> bool:
        """Same consolidation behaviour (metadata aside); NaN bounds compare equal."""

        def eq(a: float, b: float) -> bool:
            return a == b or (math.isnan(a) and math.isnan(b))

        return (self.type is other.type and self.heartbeat == other.heartbeat
                and eq(self.min, other.min) and eq(self.max, other.max))


# --- exported state (what dump/restore and persistence exchange) -------------

@dataclass
class DSState:
    """Per data source PDP state; ``last_ds`` NaN is rrdtool's "U"."""

    last_ds: float
    value: float
    unknown_sec: int


@dataclass
class ArchiveState:
    """cdp_prep per DS (arrays of n_ds) and rows oldest first (rows x n_ds)."""

    archive: Archive
    primary: np.ndarray
    secondary: np.ndarray
    value: np.ndarray
    unknown: np.ndarray
    rows: np.ndarray


@dataclass
class RRDState:
    """The whole of one RRD, independent of the store's column layout."""

    layout: Layout
    last_update: int
    data_sources: list[DataSource]
    ds: list[DSState]
    archives: list[ArchiveState] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.data_sources)
        if len(self.ds) != n or len(self.archives) != len(self.layout.archives):
            raise RRDUsageError("RRDState: data source or archive count mismatch")
        names = [d.name for d in self.data_sources]
        if len(set(names)) != n:
            raise RRDUsageError(f"RRDState: duplicate data source names {names}")
        for a, st in zip(self.layout.archives, self.archives):
            if st.archive != a or st.rows.shape != (a.rows, n):
                raise RRDUsageError(f"RRDState: archive {a} does not match its rows")


@dataclass
class Xport:
    """Rows chosen for /rrd_updates: ``values[i]`` is time ``end - i*step``."""

    start: int
    step: int
    end: int
    legend: list[str]
    values: np.ndarray  # (rows, columns), newest row first
    # Legend order in blocks: (rrd_id, cf, columns) per RRD and archive.
    parts: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def times(self) -> np.ndarray:
        return self.end - self.step * np.arange(self.values.shape[0], dtype=np.int64)
