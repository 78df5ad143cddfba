"""Polling for a condition a real server reaches in its own time (no timing assertions: the
timeout only bounds how long a broken server is waited for)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

__all__ = ["until"]

T = TypeVar("T")


def until(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition",
          step: float = 0.2) -> T:
    """predicate()'s first truthy value, polled every `step` s; AssertionError after
    `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")
