"""Which host's agent runs a call, and where an HTTP request belongs.

The master answers every call; the calls that act on a domain or a host's local storage run
on the agent of the host concerned: the master forwards them there over the pool's internal
RPC (`Peers.call`), waits for that agent's answer and for its writes to reach this agent's
cache (`Store.fence`), and answers the client. The agent that runs it fences first, too
(`calls.call`, for every call in a pool session): it reads what was committed before the
call was sent, not a cache a change behind. A VM's host is the one it runs on, else the one
whose local SR holds its disks (a VM on shared storage, or with no disk, runs where asked or
on the master).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from .dispatch import Message
from .power import LIVE
from ..model.errors import XenAPIError
from ..model.identity import ThisHost
from ..model.store import Store
from ..model.xtypes import NULL_REF
from .peers import Peers

__all__ = ["Forwarder", "home_of_vm", "home_of_sr"]

log = logging.getLogger(__name__)


def home_of_sr(store: Store, sr: str) -> str | None:
    """The host of a local SR (not shared, attached on one host); None for a shared one."""
    rec = store.find("SR", sr)
    if rec is None or rec["shared"]:
        return None
    hosts = {store.get("PBD", p)["host"] for p in rec["PBDs"]}
    return hosts.pop() if len(hosts) == 1 else None


def home_of_vm(store: Store, vm: str) -> str | None:
    """The host whose agent holds `vm`'s domain, else its disks (None: any host may)."""
    rec = store.find("VM", vm)
    if rec is None:
        return None
    if rec["power_state"] in LIVE and rec["resident_on"] != NULL_REF:
        return rec["resident_on"]
    vdis = [store.find("VBD", b)["VDI"] for b in rec["VBDs"] if store.find("VBD", b)]
    if rec["suspend_VDI"] != NULL_REF:
        vdis.append(rec["suspend_VDI"])
    for vdi in vdis:
        v = store.find("VDI", vdi)
        home = home_of_sr(store, v["SR"]) if v is not None else None
        if home is not None:
            return home
    return None


def _vm_arg(store: Store, args: list) -> str | None:
    return home_of_vm(store, args[0])


def _host_arg(index: int) -> Callable[[Store, list], str | None]:
    return lambda store, args: args[index]


def _device_vm(cls: str) -> Callable[[Store, list], str | None]:
    def where(store: Store, args: list) -> str | None:
        rec = store.find(cls, args[0])
        return home_of_vm(store, rec["VM"]) if rec is not None else None
    return where


def _vdi_sr(store: Store, args: list) -> str | None:
    rec = store.find("VDI", args[0])
    return home_of_sr(store, rec["SR"]) if rec is not None else None


def _sr_arg(store: Store, args: list) -> str | None:
    return home_of_sr(store, args[0])


def _new_vdi(store: Store, args: list) -> str | None:
    sr = args[0].get("SR") if isinstance(args[0], dict) else None
    return home_of_sr(store, sr) if isinstance(sr, str) else None


def _pbd_host(store: Store, args: list) -> str | None:
    rec = store.find("PBD", args[0])
    return rec["host"] if rec is not None else None


def _new_local_sr(store: Store, args: list) -> str | None:
    return None if args[7] else args[0]     # a shared SR is attached on every host


# message -> the host whose agent runs it (None: this one): domains, and the files of a
# host's local SRs
_WHERE: dict[str, Callable[[Store, list], str | None]] = {
    **{f"VM.{op}": _vm_arg for op in (
        "clone", "copy", "snapshot", "checkpoint", "revert", "provision", "destroy")},
    **{f"VDI.{op}": _vdi_sr for op in (
        "destroy", "resize", "resize_online", "clone", "copy", "forget", "data_destroy")},
    "VDI.create": _new_vdi, "SR.scan": _sr_arg, "SR.update": _sr_arg,
    "SR.create": _new_local_sr, "PBD.plug": _pbd_host, "PBD.unplug": _pbd_host,
    **{f"VM.{op}": _vm_arg for op in (
        "start", "resume", "pause", "unpause", "clean_shutdown", "hard_shutdown", "shutdown",
        "clean_reboot", "hard_reboot", "suspend")},
    "VM.start_on": _host_arg(1), "VM.resume_on": _host_arg(1),
    **{f"VBD.{op}": _device_vm("VBD") for op in ("plug", "unplug", "insert", "eject")},
    **{f"VIF.{op}": _device_vm("VIF") for op in ("plug", "unplug")},
    "pool.eject": _host_arg(0),
}


class Forwarder:
    """The dispatcher's `forward` hook."""

    def __init__(self, store: Store, host: ThisHost, peers: Peers, executor=None) -> None:
        self.store = store
        self.host = host
        self.peers = peers
        self.executor = executor

    def target(self, name: str, args: list) -> str | None:
        """The other host whose agent must run `name`, or None (this agent)."""
        where = _WHERE.get(name)
        if where is None:
            return None
        host = where(self.store, args)
        if not host or host in (NULL_REF, self.host.host_ref) or \
                self.store.find("host", host) is None:
            return None
        return host

    def __call__(self, msg: Message, args: list) -> Awaitable[Any] | None:
        host = self.target(msg.name, args)
        return None if host is None else self._run(host, msg.name, args)

    async def _run(self, host: str, name: str, args: list) -> Any:
        rec = self.store.get("host", host)
        metrics = self.store.find("host_metrics", rec["metrics"])
        if metrics is not None and not metrics["live"]:
            raise XenAPIError("HOST_OFFLINE", host)
        try:
            return await self.peers.call(host, name, *args)
        finally:                # what it wrote, even if it then failed, is read here next
            try:
                await self.store.fence(self.executor)
            except Exception:  # noqa: BLE001 - the database is away: the follower catches up
                log.warning("could not wait for %s's writes to arrive", host, exc_info=True)
