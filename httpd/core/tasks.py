"""Task records and the runner behind `Async.` calls and HTTP transfers.

A task is finished on every path: the runner turns a result into `success` with the XML-RPC
text in `result`, a XenAPIError into `failure` (or `cancelled` for TASK_CANCELLED), and anything
unexpected into INTERNAL_ERROR. Cancellation is cooperative: task.cancel marks the task
`cancelling` and sets an asyncio.Event that long operations poll (`raise_if_cancelled`) or race
against (`race_cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import logging
import time
from typing import Any, Awaitable, Callable

from ..model.errors import XenAPIError, internal_error
from ..model.store import Store
from ..model.xtypes import NULL_REF
from ..wire.xmlrpc import dumps_value
from ..jobs import Jobs

__all__ = ["TaskManager", "TASK_STATUS"]

log = logging.getLogger(__name__)

COMPLETED_TTL = 65 * 60
PENDING_TTL = 24 * 3600
MAX_COMPLETED = 200
# status -> the statuses it may become (xapi's task life: pending, maybe cancelling, one end)
TASK_STATUS: dict[str, tuple[str, ...]] = {
    "pending": ("cancelling", "success", "failure", "cancelled"),
    "cancelling": ("success", "failure", "cancelled"),
    "success": (), "failure": (), "cancelled": (),
}
_DONE = tuple(s for s, nexts in TASK_STATUS.items() if not nexts)
_LIVE = tuple(s for s, nexts in TASK_STATUS.items() if nexts)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _owner_ref(task: str) -> str:
    return f"owner/{task}"


class TaskManager:
    def __init__(self, store: Store, host_ref: str) -> None:
        self.store = store
        self.host_ref = host_ref
        self._cancel: dict[str, asyncio.Event] = {}
        self._jobs = Jobs()
        self._last_progress: dict[str, tuple[float, float]] = {}

    def create(self, label: str, description: str = "", *, session: str = NULL_REF,
               subtask_of: str = NULL_REF, type: str = "") -> str:
        with self.store.transaction():
            ref = self.store.create("task", {
                "name_label": label, "name_description": description, "created": _now(),
                "finished": _dt.datetime.fromtimestamp(0, _dt.timezone.utc),
                "status": "pending", "resident_on": self.host_ref, "progress": 0.0,
                "type": type, "subtask_of": subtask_of, "allowed_operations": ["cancel"]})
            if session and session != NULL_REF:
                self.store.create("task_owner", {"task": ref, "session": session},
                                  ref=_owner_ref(ref))
        return ref

    def owner(self, ref: str) -> str | None:
        """The session that made task `ref` (None: the agent's own, or gone)."""
        rec = self.store.find("task_owner", _owner_ref(ref))
        return rec["session"] if rec else None

    def spawn(self, label: str, session: str | None,
              run: Callable[[str], Awaitable[Any]]) -> str:
        """A task running `run(task_ref)` in the background; finished on every path."""
        ref = self.create(label, session=session or NULL_REF)
        self._jobs.spawn(self._run(ref, label, run))
        return ref

    async def _run(self, ref: str, label: str, run: Callable[[str], Awaitable[Any]]) -> None:
        try:
            result = await run(ref)
        except XenAPIError as e:
            self.fail(ref, e)
        except asyncio.CancelledError:
            self.fail(ref, XenAPIError("TASK_CANCELLED", ref))
            raise
        except Exception as e:  # noqa: BLE001 - becomes the task's error, logged here
            log.exception("task %s (%s) failed", ref, label)
            self.fail(ref, internal_error(e))
        else:
            self.succeed(ref, result)
        await self.store.sync()

    # --- state changes ---------------------------------------------------------------------
    def _finish(self, ref: str, changes: dict) -> None:
        rec = self.store.find("task", ref)
        if rec is None:
            return
        if changes["status"] not in TASK_STATUS[rec["status"]]:
            log.warning("task %s: %s -> %s ignored (already finished)", ref, rec["status"],
                        changes["status"])
            return
        self.store.update("task", ref, {"finished": _now(), "allowed_operations": [], **changes})
        self._cancel.pop(ref, None)
        self._last_progress.pop(ref, None)

    def succeed(self, ref: str, value: Any = "") -> None:
        result = "" if value in ("", None) else dumps_value(value)
        self._finish(ref, {"status": "success", "progress": 1.0, "result": result})

    def fail(self, ref: str, err: XenAPIError) -> None:
        status = "cancelled" if err.code == "TASK_CANCELLED" else "failure"
        self._finish(ref, {"status": status, "error_info": err.description})

    def set_progress(self, ref: str, value: float) -> None:
        """Rate-limited: at most every 1% or 0.5 s, so a transfer does not flood events."""
        value = min(max(value, 0.0), 1.0)
        now = time.monotonic()
        last = self._last_progress.get(ref)
        if last is not None and value - last[0] < 0.01 and now - last[1] < 0.5 and value < 1.0:
            return
        rec = self.store.find("task", ref)
        if rec is None or rec["status"] not in _LIVE:
            return
        self._last_progress[ref] = (value, now)
        self.store.update("task", ref, {"progress": value})

    def set_status(self, ref: str, status: str) -> None:
        """A client's own task (task.set_status): along TASK_STATUS only."""
        rec = self.store.get("task", ref)
        if status == rec["status"]:
            return
        if status not in TASK_STATUS[rec["status"]]:
            raise XenAPIError("INVALID_VALUE", "status", f"{rec['status']} -> {status}")
        if TASK_STATUS[status]:
            self.store.update("task", ref, {"status": status})
            if status == "cancelling":
                self.cancel_event(ref).set()
        else:
            self._finish(ref, {"status": status, **({"progress": 1.0}
                                                    if status == "success" else {})})

    def cancel(self, ref: str) -> None:
        rec = self.store.get("task", ref)
        if "cancelling" not in TASK_STATUS[rec["status"]]:
            raise XenAPIError("OPERATION_NOT_ALLOWED", f"task {ref} is {rec['status']}")
        self.store.update("task", ref, {"status": "cancelling"})
        self.cancel_event(ref).set()

    def cancel_event(self, ref: str) -> asyncio.Event:
        ev = self._cancel.get(ref)
        if ev is None:
            ev = self._cancel[ref] = asyncio.Event()
            rec = self.store.find("task", ref)
            if rec is not None and rec["status"] == "cancelling":
                ev.set()
        return ev

    def is_cancelling(self, ref: str) -> bool:
        rec = self.store.find("task", ref)
        return rec is not None and rec["status"] == "cancelling"

    def raise_if_cancelled(self, ref: str) -> None:
        if self.is_cancelling(ref):
            raise XenAPIError("TASK_CANCELLED", ref)

    async def race_cancel(self, ref: str, aw: Any) -> Any:
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.cancel_event(ref).wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # the caller goes (its client left): the work ends first, cleaned up (side files
            # removed, threads joined), so whoever fails the task next finds nothing left
            work.cancel()
            while not work.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({work})
            if not work.cancelled():
                work.exception()        # retrieved: superseded by the cancellation
            raise
        finally:
            stop.cancel()
        if work.done():
            return work.result()
        work.cancel()
        try:
            await work
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - superseded by the cancel
            pass
        raise XenAPIError("TASK_CANCELLED", ref)

    def destroy(self, ref: str) -> None:
        with self.store.transaction():
            self.store.destroy("task", ref)
            if self.store.find("task_owner", _owner_ref(ref)) is not None:
                self.store.destroy("task_owner", _owner_ref(ref))
        self._cancel.pop(ref, None)

    # --- housekeeping ----------------------------------------------------------------------
    def recover_after_restart(self) -> None:
        """Tasks that were running when this agent died will never finish: fail them (in a
        pool, this host's only: the others' agents run theirs)."""
        for ref, rec in list(self.store.all("task").items()):
            if rec["status"] in _LIVE and rec["resident_on"] in (self.host_ref, NULL_REF):
                self.fail(ref, XenAPIError("INTERNAL_ERROR",
                                           "the server restarted while the task was running"))

    def gc(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        done: list[tuple[float, str]] = []
        doomed: list[str] = []
        for ref, rec in self.store.all("task").items():
            if rec["status"] in _DONE:
                finished = rec["finished"].timestamp()
                if now - finished > COMPLETED_TTL:
                    doomed.append(ref)
                else:
                    done.append((finished, ref))
            elif now - rec["created"].timestamp() > PENDING_TTL:
                doomed.append(ref)
        done.sort()
        doomed.extend(ref for _, ref in done[:max(0, len(done) - MAX_COMPLETED)])
        for ref in doomed:
            self.destroy(ref)
        return len(doomed)

    async def shutdown(self) -> None:
        await self._jobs.close()
