"""An HTTP request's `task_id` task ends when the request does, as xapi's handlers end it.

Xen Orchestra creates a task for every request it makes (statistics polls included) and waits
for it; a handler that does not finish the task itself (the transfer handlers do, with their
result) leaves it here: success for a 2xx answer, failure with the error otherwise; a redirect
leaves it pending for the host the request is sent to. Only a
request whose credentials were good may end a task, and only a pending task of its own
(`task_refusal`), so nobody can fail or reuse a task by naming it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiohttp import web

from ..model.errors import XenAPIError
from ..core.context import Services
from ..core.tasks import TaskManager
from ..model.store import Store
from .appkeys import SERVICES
from .auth import AUTHENTICATED, Caller

__all__ = ["tasks_middleware", "task_refusal", "fenced_task_refusal"]

log = logging.getLogger(__name__)


def _task_id(request: web.Request) -> str | None:
    return request.query.get("task_id") or request.cookies.get("task_id") or None


def task_refusal(store: Store, tasks: TaskManager, caller: Caller, task_id: str
                 ) -> XenAPIError | None:
    """Why `caller` may not use the client's task_id (None: it may). The task must be pending
    (a finished one stays as it ended) and the caller's: made by its session, or, for Basic
    auth's one-request session, by a session of the same user."""
    task = store.find("task", task_id)
    if task is None:
        return XenAPIError("HANDLE_INVALID", "task", task_id)
    if task["status"] not in ("pending", "cancelling"):
        return XenAPIError("OPERATION_NOT_ALLOWED",
                           f"task {task_id} is {task['status']}, not pending")
    made_by = tasks.owner(task_id)
    if made_by == caller.session:
        return None
    owner = store.find("session", made_by) if made_by else None
    if not caller.one_request or owner is None or owner["auth_user_name"] != caller.user:
        return XenAPIError("OPERATION_NOT_ALLOWED", f"task {task_id} belongs to another session")
    return None


async def fenced_task_refusal(services: Services, caller: Caller, task_id: str
                              ) -> XenAPIError | None:
    """:func:`task_refusal`, but a task this agent does not know yet is looked for again
    after the database's newest changes have arrived: it may have been made a moment ago on
    the pool's master, which sent the client here (xe's task.create, then its GET). The
    database away: the first answer stands (logged)."""
    refusal = task_refusal(services.store, services.tasks, caller, task_id)
    if refusal is None or refusal.code != "HANDLE_INVALID":
        return refusal
    try:
        await services.store.fence(services.executors.disk)
    except Exception:  # noqa: BLE001 - an answer, not an error, whatever the database does
        log.warning("could not read the database's newest changes", exc_info=True)
        return refusal
    return task_refusal(services.store, services.tasks, caller, task_id)


async def _finish(request: web.Request, error: XenAPIError | None, fence: bool = True) -> None:
    """End the request's task as it went (:func:`fenced_task_refusal` decides whether it may;
    without the wait when the request was cancelled: nothing may wait then)."""
    ref = _task_id(request)
    caller = request.get(AUTHENTICATED)
    if ref is None or caller is None:
        return
    services = request.app[SERVICES]
    refusal = (await fenced_task_refusal(services, caller, ref) if fence else
               task_refusal(services.store, services.tasks, caller, ref))
    if refusal is not None:
        return
    tasks = services.tasks
    if error is None:
        tasks.succeed(ref)
    else:
        tasks.fail(ref, error)


def _sent_on(status: int) -> bool:
    """A redirect (a pool's master sends the request to the host that holds the VM or the
    SR): the task goes on there, and that host's agent ends it."""
    return status in (301, 302, 303, 307, 308)


@web.middleware
async def tasks_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                           ) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except asyncio.CancelledError:
        await _finish(request, XenAPIError("TASK_CANCELLED", _task_id(request) or ""),
                      fence=False)
        raise
    except web.HTTPException as e:
        if not _sent_on(e.status):
            await _finish(request, None if e.status < 400 else
                          XenAPIError("INTERNAL_ERROR", f"HTTP {e.status} {e.reason}"))
        raise
    if _sent_on(resp.status):
        return resp
    if resp.status < 400:
        await _finish(request, None)
    else:
        code = resp.headers.get("X-XenAPI-Error", "INTERNAL_ERROR")
        await _finish(request, XenAPIError(code, f"HTTP {resp.status} {resp.reason}"))
    return resp
