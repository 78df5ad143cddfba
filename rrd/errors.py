"""Exceptions of the rrd package: whose fault it is decides the type.

``RRDUsageError`` is a local misuse (unknown id, duplicate name, stale
timestamp); ``CorruptRRD`` is bad input read from outside (a damaged or
hostile dump file) and carries the path so an operator can find it.
"""

from __future__ import annotations

__all__ = ["RRDError", "RRDUsageError", "UnknownRRD", "StaleUpdate", "CorruptRRD"]


class RRDError(Exception):
    """Base of every error this package raises on purpose."""


class RRDUsageError(RRDError, ValueError):
    """The caller asked for something impossible (a bug on our side)."""


class UnknownRRD(RRDUsageError, KeyError):
    """No RRD (or data source) of that name; HTTP handlers map it to 404."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown RRD"


class StaleUpdate(RRDUsageError):
    """An update at or before the last update time, as rrdtool refuses it."""


class CorruptRRD(RRDError):
    """A stored RRD cannot be read; ``path`` says which file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
