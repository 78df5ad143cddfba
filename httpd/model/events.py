"""The event hub behind event.next and event.from.

Two views of one stream of changes:
- `event.from` wants the *latest* state of every object changed since a token, coalesced per
  object. An OrderedDict keyed by ref, moved to the end on every change, gives exactly that:
  walking it backwards until an id <= token visits only what changed, once per object.
- `event.next` wants every event in order since the session's cursor, from a bounded queue, with
  EVENTS_LOST when the queue overflowed past a slow reader.
Waiters block on one future that is swapped on every publish, so a change wakes them all at once
and each recomputes what it cares about.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

from .datamodel import CLASSES, class_spec
from .errors import XenAPIError

__all__ = ["EventHub", "Subscription", "Change"]


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    cls: str
    op: str            # add | mod | del
    ref: str
    created: int       # id of the add, for telling add from mod relative to a token
    timestamp: float
    snapshot: dict | None = None   # only in the event.next queue


class Subscription:
    """Parsed class list: "*", a class name (any case), or "class/OpaqueRef:...".

    Unknown class names raise EVENT_SUBSCRIPTION_PARSE_FAILURE so a typo is not a silent hang.
    """

    def __init__(self, specs: list[str]) -> None:
        self.everything = False
        self.classes: set[str] = set()
        self.objects: set[tuple[str, str]] = set()
        for s in specs:
            if not isinstance(s, str):
                raise XenAPIError("EVENT_SUBSCRIPTION_PARSE_FAILURE", repr(s))
            if s == "*":
                self.everything = True
                continue
            name, _, ref = s.partition("/")
            spec = class_spec(name)
            if spec is None:
                raise XenAPIError("EVENT_SUBSCRIPTION_PARSE_FAILURE", s)
            if ref:
                self.objects.add((spec.name, ref))
            else:
                self.classes.add(spec.name)

    def merge(self, other: "Subscription") -> None:
        self.everything |= other.everything
        self.classes |= other.classes
        self.objects |= other.objects

    def remove(self, other: "Subscription") -> None:
        if other.everything:
            self.everything = False
        self.classes -= other.classes
        self.objects -= other.objects

    def matches(self, cls: str, ref: str) -> bool:
        return self.everything or cls in self.classes or (cls, ref) in self.objects

    def class_names(self) -> set[str]:
        if self.everything:
            return set(CLASSES)
        return self.classes | {c for c, _ in self.objects}


class _Registration:
    __slots__ = ("sub", "cursor")

    def __init__(self, sub: Subscription, cursor: int) -> None:
        self.sub = sub
        self.cursor = cursor


def _weight(snapshot: dict | None) -> int:
    """What a snapshot holds, roughly: one per field plus one per set or map member."""
    if not snapshot:
        return 1
    return len(snapshot) + sum(len(v) for v in snapshot.values() if isinstance(v, (list, dict)))


class EventHub:
    def __init__(self, *, queue_size: int = 10_000, tombstones: int = 20_000) -> None:
        # Ids continue across restarts and agents (wall-clock based, see publish) so a
        # client's old token never blocks.
        self.base_id = int(time.time() * 1000)
        self.last_id = self.base_id
        self._latest: OrderedDict[str, Change] = OrderedDict()
        self._tombstones: deque[Change] = deque()
        self._max_tombstones = tombstones
        self._queue: deque[Change] = deque(maxlen=queue_size)
        self._queue_weight = 0
        self.max_queue_weight = 1_000_000        # set/map members across queued snapshots
        self._dropped_upto = 0   # id of the newest event that fell off the full queue
        self._registrations: dict[str, _Registration] = {}
        self._wakeup: asyncio.Future | None = None
        self.closed = False      # the agent is stopping: blocked event calls answer at once

    # --- producing -------------------------------------------------------------------------
    def publish(self, cls: str, op: str, ref: str, snapshot: dict | None) -> None:
        # never behind the wall clock (ms): a pool's agents number alike, so a token one
        # master gave stays good on the next (its later changes have higher ids there too)
        self.last_id = max(self.last_id + 1, int(time.time() * 1000))
        eid = self.last_id
        prev = self._latest.pop(ref, None)
        created = eid if op == "add" else (prev.created if prev else self.base_id)
        now = time.time()
        change = Change(eid, cls, op, ref, created, now)
        self._latest[ref] = change
        if op == "del":
            self._tombstones.append(change)
            if len(self._tombstones) > self._max_tombstones:
                old = self._tombstones.popleft()
                if self._latest.get(old.ref) is old:
                    del self._latest[old.ref]
        # event.next's queue keeps snapshots, so only for a registered session that wants this
        # object, and bounded in count and in what the snapshots hold (40,000 tags weigh
        # 40,000): past either bound the oldest go, and laggards get EVENTS_LOST
        if CLASSES[cls].next_events and any(r.sub.matches(cls, ref)
                                            for r in self._registrations.values()):
            weight = _weight(snapshot)
            while self._queue and (len(self._queue) == self._queue.maxlen or
                                   self._queue_weight + weight > self.max_queue_weight):
                old = self._queue.popleft()
                self._queue_weight -= _weight(old.snapshot)
                self._dropped_upto = old.id
            self._queue.append(Change(eid, cls, op, ref, created, now, snapshot))
            self._queue_weight += weight
        self.wake()

    def close(self) -> None:
        """Shutdown: every blocked event call answers now, later ones do not block."""
        self.closed = True
        self.wake()

    def wake(self) -> None:
        """Wake every blocked event call (a change, a logout, a shutdown)."""
        w, self._wakeup = self._wakeup, None
        if w is not None and not w.done():
            w.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        if self.closed:
            return
        if self._wakeup is None:
            self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._wakeup), timeout)
        except asyncio.TimeoutError:
            pass

    # --- event.from ------------------------------------------------------------------------
    def parse_token(self, token: str) -> int | None:
        """None means "from the beginning" (the empty token)."""
        if token == "":
            return None
        try:
            value = int(token.split(",")[0])
        except ValueError:
            raise XenAPIError("EVENT_FROM_TOKEN_PARSE_FAILURE", token) from None
        return value

    def token(self) -> str:
        return str(self.last_id)

    def changes_since(self, since: int, sub: Subscription) -> list[tuple[str, str, str, int]]:
        """(class, ref, op, id) per changed object, oldest first; created-and-gone is skipped."""
        out: list[tuple[str, str, str, int]] = []
        for change in reversed(self._latest.values()):
            if change.id <= since:
                break
            if not sub.matches(change.cls, change.ref):
                continue
            if change.op == "del":
                if change.created > since:
                    continue
                out.append((change.cls, change.ref, "del", change.id))
            else:
                op = "add" if change.created > since else "mod"
                out.append((change.cls, change.ref, op, change.id))
        out.reverse()
        return out

    def is_stale(self, since: int) -> bool:
        """A token from before this process started: we cannot know what changed, resync."""
        return since < self.base_id

    # --- event.register / event.next -------------------------------------------------------
    def register(self, session: str, sub: Subscription) -> None:
        reg = self._registrations.get(session)
        if reg is None:
            self._registrations[session] = _Registration(sub, self.last_id)
        else:
            reg.sub.merge(sub)

    def unregister(self, session: str, sub: Subscription) -> None:
        reg = self._registrations.get(session)
        if reg is not None:
            reg.sub.remove(sub)

    def forget_session(self, session: str) -> None:
        self._registrations.pop(session, None)

    def take_next(self, session: str) -> list[Change]:
        """Events for a registered session since its cursor; EVENTS_LOST if the queue moved on."""
        reg = self._registrations.get(session)
        if reg is None:
            raise XenAPIError("SESSION_NOT_REGISTERED", session)
        if reg.cursor < self._dropped_upto:
            reg.cursor = self.last_id
            raise XenAPIError("EVENTS_LOST")
        out = []
        for c in reversed(self._queue):      # newest first: stop at what was already read
            if c.id <= reg.cursor:
                break
            if reg.sub.matches(c.cls, c.ref):
                out.append(c)
        out.reverse()
        reg.cursor = self.last_id
        return out

    def registered(self, session: str) -> bool:
        return session in self._registrations
