"""Messages (alerts) the agent posts about its objects, as xapi does: `post` makes one, in
the caller's transaction when it has one. The API's message.* calls are in httpd.api.message."""

from __future__ import annotations

import datetime as _dt

from ..model.datamodel import MESSAGE_CLS
from ..model.errors import XenAPIError
from ..model.store import Store

__all__ = ["post", "VM_CRASHED"]

# (name, priority) of the messages this agent posts; the names and priorities are xapi's
VM_CRASHED = ("VM_CRASHED", 2)

# a message's class -> the class whose uuid it names
_OBJECT_CLASS = {"VM": "VM", "Host": "host", "SR": "SR", "Pool": "pool", "VDI": "VDI"}


def post(store: Store, name: str, priority: int, cls: str, obj_uuid: str, body: str) -> str:
    """A new message about the object of class `cls` (message.cls spelling: VM, Host, SR,
    Pool, VDI) with `obj_uuid`; UUID_INVALID when there is none."""
    cls = MESSAGE_CLS.check(cls, "cls")
    target = _OBJECT_CLASS.get(cls)
    if target is None:
        raise XenAPIError("INVALID_VALUE", "cls", cls)
    store.ref_of_uuid(target, obj_uuid)          # UUID_INVALID when it is not there
    return store.create("message", {
        "name": name, "priority": int(priority), "cls": cls, "obj_uuid": obj_uuid,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0), "body": body})
