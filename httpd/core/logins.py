"""Failed logins slowed per source, at a bounded cost to the server and none to other sources.

Each source (a client address) has a gate: one password check at a time, each failure doubling
the wait before that source's next check (from the configured delay up to MAX_DELAY); a
success, or ten quiet minutes, clears it. At most MAX_QUEUED attempts of one source wait their
turn; more are refused without a password check, after that source's current wait (so
refusals do not come back as fast as a guesser can ask). So a source guessing with 300
connections gets about one guess per delay and holds one of the password pool's threads at
most, while a login from anywhere else runs as soon as a thread is free. (A password that
passed in the last minutes skips the gate, in sessions.py: a client that logs in again is not
held up by a guesser at its address.) Gates are kept for the MAX_SOURCES most recent sources.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Awaitable, Callable

from ..model.errors import XenAPIError

__all__ = ["LoginGates", "MAX_DELAY", "MAX_QUEUED"]

MAX_DELAY = 8.0
MAX_QUEUED = 4
MAX_SOURCES = 10_000
FORGET_AFTER = 600.0      # seconds after its last wait ended that a source's failures count


class _Gate:
    __slots__ = ("lock", "waiting", "failures", "not_before")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.failures = 0
        self.not_before = 0.0


class LoginGates:
    def __init__(self, fail_delay: float) -> None:
        self.fail_delay = fail_delay
        self._gates: OrderedDict[str, _Gate] = OrderedDict()

    def _gate(self, source: str) -> _Gate:
        gate = self._gates.pop(source, None) or _Gate()
        self._gates[source] = gate            # most recent last
        while len(self._gates) > MAX_SOURCES:
            old, g = next(iter(self._gates.items()))
            if g.waiting:
                break
            del self._gates[old]
        return gate

    async def check(self, source: str, user: str, verify: Callable[[], Awaitable[bool]]) -> None:
        """Run `verify` for `source` under its gate; SESSION_AUTHENTICATION_FAILED if it fails
        or too many of this source's attempts wait already."""
        gate = self._gate(source)
        if gate.waiting >= MAX_QUEUED:
            # refused unchecked, but not at once: a guesser whose answer came back at once
            # would just ask again, a flood of cheap requests; this wait costs a timer
            await asyncio.sleep(min(MAX_DELAY, max(self.fail_delay,
                                                   gate.not_before - time.monotonic())))
            raise XenAPIError("SESSION_AUTHENTICATION_FAILED", user,
                              "Authentication failure (too many attempts from this source)")
        gate.waiting += 1
        try:
            async with gate.lock:
                wait = gate.not_before - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                ok = await verify()
                now = time.monotonic()
                if ok:
                    gate.failures, gate.not_before = 0, 0.0
                else:
                    if now - gate.not_before > FORGET_AFTER:   # an old streak is forgiven
                        gate.failures = 0
                    gate.failures += 1
                    delay = min(MAX_DELAY, self.fail_delay * 2 ** min(gate.failures - 1, 16))
                    gate.not_before = now + delay
        finally:
            gate.waiting -= 1
        if not ok:
            raise XenAPIError("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
