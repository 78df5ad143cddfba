"""Exception types that say whose fault a failure is (see STYLE.md, h11 section).

A `RemoteProtocolError` means the peer sent bytes we cannot accept: the
connection is closed.  A `LocalProtocolError` means our own code misused an
object (wrong state, invalid event built locally).  Either way the object that
raised is left in an error state and every later call fails fast.
"""

from __future__ import annotations

__all__ = ["ConsoleError", "LocalProtocolError", "RemoteProtocolError"]


class ConsoleError(Exception):
    """Base class; `status_hint` is the HTTP status to answer with, if any is still possible."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_hint = status_hint


class LocalProtocolError(ConsoleError):
    """Our side broke the protocol or misused an API: a bug here, not in the peer."""

    def __init__(self, message: str, *, status_hint: int = 500) -> None:
        super().__init__(message, status_hint=status_hint)


class RemoteProtocolError(ConsoleError):
    """The peer sent something invalid; the connection must be closed."""
