"""What a VM's power state means in the database, in one place.

The API (VM.start, suspend, ...), guest-initiated halts and server restarts all go through
`mark_running` / `mark_halted` / `mark_suspended`, so VBD/VIF attachment, consoles, metrics,
domid, resident_on and allowed_operations always agree with the power state.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .dispatch import Ctx, run_soon
from .domains import DiskSpec, Domain, DomainConfig, GuestEvent, NicSpec
from .errors import XenAPIError
from .nic_settings import effective_mtu, nic_settings
from .operations import refresh_allowed
from .xtypes import NULL_REF

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["domain_config", "mark_running", "mark_halted", "mark_suspended", "vbd_device",
           "Lifecycle", "VMListener"]

log = logging.getLogger(__name__)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class VMListener(Protocol):
    """Services that follow VMs (statistics, console tunnels) register on agent.vm_listeners.

    Called synchronously on the event loop right after the database says so; keep them quick
    (schedule slow work) and never raise.
    """

    def vm_running(self, uuid: str) -> None: ...

    def vm_stopped(self, uuid: str) -> None:
        """Halted or suspended: its domain is gone."""

    def vm_destroyed(self, uuid: str) -> None: ...


def notify(ctx: Ctx, event: str, uuid: str) -> None:
    for listener in list(ctx.agent.vm_listeners):
        try:
            getattr(listener, event)(uuid)
        except Exception:  # noqa: BLE001 - a listener's bug must not undo a power change
            log.exception("%s listener failed for %s", event, uuid)


def vbd_device(userdevice: str) -> str:
    """userdevice "0" -> "xvda", "1" -> "xvdb"; anything else is kept as given."""
    if userdevice.isdigit() and int(userdevice) < 26:
        return "xvd" + chr(ord("a") + int(userdevice))
    return userdevice


def domain_config(ctx: Ctx, vm: str) -> DomainConfig:
    from .api.storage import vdi_file
    rec = ctx.store.get("VM", vm)
    disks = []
    for vbd in rec["VBDs"]:
        b = ctx.store.get("VBD", vbd)
        if b["empty"] or b["VDI"] == NULL_REF:
            continue
        vdi = ctx.store.get("VDI", b["VDI"])
        disks.append(DiskSpec(vbd_device(b["userdevice"]), str(vdi_file(ctx, b["VDI"])),
                              b["mode"] == "RO" or vdi["read_only"]))
    nics = []
    for vif in rec["VIFs"]:
        v = ctx.store.get("VIF", vif)
        nics.append(NicSpec(v["device"], v["MAC"], effective_mtu(v["other_config"], v["MTU"]),
                            nic_settings(v["other_config"])))
    oc = rec["other_config"]
    vm_data = tuple(sorted((k, v) for k, v in rec["xenstore_data"].items()
                           if k.startswith("vm-data/") or k == "vm-data"))
    return DomainConfig(
        uuid=rec["uuid"], name=rec["name_label"], vcpus=max(1, rec["VCPUs_at_startup"]),
        memory=rec["memory_dynamic_max"] or rec["memory_static_max"], disks=tuple(disks),
        nics=tuple(nics), vm_data=vm_data, vnc=oc.get("disable_pv_vnc", "") not in ("1", "true"),
        boot_lines=_bootloader_lines(rec))


def _bootloader_lines(rec: dict) -> tuple[str, ...]:
    """What eliloader says on the console in an installer's first round (chapter 6)."""
    if rec["PV_bootloader"] != "eliloader":
        return (f"Bootloader: {rec['PV_bootloader'] or 'none'}",)
    oc = rec["other_config"]
    lines = [f"eliloader: install-round {oc.get('install-round', '1')}",
             f"eliloader: fetching the installer kernel and ramdisk from "
             f"{oc.get('install-repository', '')}"]
    if oc.get("install-vnc", "false").lower() in ("true", "1", "yes"):
        lines.append("installer: VNC enabled" + (
            " with a password" if oc.get("install-vncpasswd") else " without a password"))
    lines.append(f"installer: starting {oc.get('install-distro', 'the')} installation")
    return tuple(lines)


def _ensure_metrics(ctx: Ctx, vm: str) -> str:
    rec = ctx.store.get("VM", vm)
    if rec["metrics"] != NULL_REF and ctx.store.find("VM_metrics", rec["metrics"]) is not None:
        return rec["metrics"]
    metrics = ctx.store.create("VM_metrics", {"install_time": _now(), "last_updated": _now()})
    ctx.store.update("VM", vm, {"metrics": metrics})
    return metrics


def _drop_consoles(ctx: Ctx, vm: str) -> None:
    for c in list(ctx.store.get("VM", vm)["consoles"]):
        ctx.store.destroy("console", c)


def mark_running(ctx: Ctx, vm: str, dom: Domain, paused: bool) -> None:
    store = ctx.store
    with store.transaction():
        rec = store.get("VM", vm)
        metrics = _ensure_metrics(ctx, vm)
        store.update("VM_metrics", metrics, {
            "start_time": _now(), "last_updated": _now(), "VCPUs_number": rec["VCPUs_at_startup"],
            "memory_actual": rec["memory_dynamic_max"], "state": ["paused"] if paused else []})
        for vbd in rec["VBDs"]:
            b = store.get("VBD", vbd)
            store.update("VBD", vbd, {"currently_attached": not b["empty"],
                                      "device": vbd_device(b["userdevice"])})
            refresh_allowed(ctx, "VBD", vbd)
        for vif in rec["VIFs"]:
            v = store.get("VIF", vif)
            store.update("VIF", vif, {"currently_attached": True,
                                      "MTU": effective_mtu(v["other_config"], v["MTU"])})
            refresh_allowed(ctx, "VIF", vif)
        _drop_consoles(ctx, vm)
        if dom.vnc_address is not None:
            c = store.create("console", {"protocol": "rfb", "VM": vm})
            store.update("console", c, {"location": ctx.agent.console_location(
                uuid=store.get("console", c)["uuid"])})
        c = store.create("console", {"protocol": "vt100", "VM": vm})
        store.update("console", c, {"location": ctx.agent.console_location(
            uuid=store.get("console", c)["uuid"])})
        store.update("VM", vm, {"power_state": "Paused" if paused else "Running",
                                "domid": dom.domid, "resident_on": ctx.agent.host_ref,
                                "memory_target": rec["memory_dynamic_max"]})
        refresh_allowed(ctx, "VM", vm)
    notify(ctx, "vm_running", rec["uuid"])


def _detach(ctx: Ctx, vm: str) -> None:
    store = ctx.store
    rec = store.get("VM", vm)
    for vbd in rec["VBDs"]:
        store.update("VBD", vbd, {"currently_attached": False})
        refresh_allowed(ctx, "VBD", vbd)
    for vif in rec["VIFs"]:
        store.update("VIF", vif, {"currently_attached": False})
        refresh_allowed(ctx, "VIF", vif)
    _drop_consoles(ctx, vm)
    gm = rec["guest_metrics"]
    if gm != NULL_REF and store.find("VM_guest_metrics", gm) is not None:
        store.destroy("VM_guest_metrics", gm)
    if rec["metrics"] != NULL_REF and store.find("VM_metrics", rec["metrics"]) is not None:
        store.update("VM_metrics", rec["metrics"], {"state": [], "last_updated": _now(),
                                                    "memory_actual": 0})


def mark_halted(ctx: Ctx, vm: str) -> None:
    with ctx.store.transaction():
        _detach(ctx, vm)
        ctx.store.update("VM", vm, {"power_state": "Halted", "domid": -1,
                                    "resident_on": NULL_REF, "guest_metrics": NULL_REF,
                                    "memory_target": 0})
        refresh_allowed(ctx, "VM", vm)
    notify(ctx, "vm_stopped", ctx.store.get("VM", vm)["uuid"])


def mark_suspended(ctx: Ctx, vm: str, suspend_vdi: str) -> None:
    with ctx.store.transaction():
        _detach(ctx, vm)
        ctx.store.update("VM", vm, {"power_state": "Suspended", "domid": -1,
                                    "resident_on": NULL_REF, "suspend_VDI": suspend_vdi,
                                    "guest_metrics": NULL_REF})
        refresh_allowed(ctx, "VM", vm)
    notify(ctx, "vm_stopped", ctx.store.get("VM", vm)["uuid"])


class Lifecycle:
    """Guest-initiated transitions and the save/restore of running domains across restarts."""

    def __init__(self, agent: "Agent") -> None:
        self.agent = agent
        self._jobs: set[asyncio.Task] = set()
        self._ips: dict[str, str] = {}

    @property
    def state_dir(self) -> Path:
        return self.agent.config.data_dir / "domains"

    def ctx(self) -> Ctx:
        return Ctx(self.agent, None)

    def on_guest_event(self, event: GuestEvent) -> None:
        run_soon(self._guest_event(event), self._jobs)

    async def _guest_event(self, event: GuestEvent) -> None:
        ctx = self.ctx()
        try:
            vm = ctx.store.ref_of_uuid("VM", event.uuid)
        except XenAPIError:
            return
        dom = self.agent.domains.get(event.uuid)
        if dom is None:
            return
        if event.kind == "guest_metrics":
            self.update_guest_metrics(ctx, vm, dom)
            await ctx.store.sync()
            return
        rec = ctx.store.get("VM", vm)
        action = rec["actions_after_shutdown"] if event.kind == "halt" else \
            rec["actions_after_reboot"]
        try:
            if action == "restart":
                await dom.reboot(clean=True)
                mark_running(ctx, vm, dom, paused=False)
            else:
                await dom.shutdown(clean=True)
                mark_halted(ctx, vm)
            await ctx.store.sync()
        except Exception:  # noqa: BLE001 - a guest event has no caller to report to
            log.exception("guest %s of %s failed", event.kind, event.uuid)

    def guest_ip(self, vif_uuid: str) -> str:
        """The address this host hands the VIF (stable for the VIF, unique among live ones)."""
        ip = self._ips.get(vif_uuid)
        if ip is None:
            taken = set(self._ips.values())
            n = zlib.crc32(vif_uuid.encode()) % (254 * 254)
            while True:
                ip = f"10.213.{n // 254}.{n % 254 + 1}"
                if ip not in taken:
                    break
                n = (n + 1) % (254 * 254)
            self._ips[vif_uuid] = ip
        return ip

    def update_guest_metrics(self, ctx: Ctx, vm: str, dom: Domain) -> None:
        report = dom.guest_report()
        rec = ctx.store.find("VM", vm)
        if report is None or rec is None or rec["power_state"] not in ("Running", "Paused"):
            return
        networks = {}
        for vif in rec["VIFs"]:
            v = ctx.store.get("VIF", vif)
            if v["device"] in report["nics"]:
                networks[f"{v['device']}/ip"] = self.guest_ip(v["uuid"])
        fields = {"os_version": report["os_version"],
                  "PV_drivers_version": report["PV_drivers_version"],
                  "PV_drivers_up_to_date": True, "memory": report["memory"],
                  "networks": networks, "other": report["other"], "live": True,
                  "last_updated": _now(), "can_use_hotplug_vbd": "yes",
                  "can_use_hotplug_vif": "yes"}
        with ctx.store.transaction():
            gm = rec["guest_metrics"]
            if gm != NULL_REF and ctx.store.find("VM_guest_metrics", gm) is not None:
                ctx.store.update("VM_guest_metrics", gm, fields)
            else:
                gm = ctx.store.create("VM_guest_metrics", fields)
                ctx.store.update("VM", vm, {"guest_metrics": gm})

    async def save_all(self) -> None:
        """Server shutdown: every running domain's state to disk, to be resumed at next start."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ctx = self.ctx()
        for ref, rec in list(ctx.store.all("VM").items()):
            dom = self.agent.domains.get(rec["uuid"])
            if dom is None or rec["is_control_domain"]:
                continue
            path = self.state_dir / f"{rec['uuid']}.state"
            try:
                path.write_bytes(b"")
                await dom.suspend(str(path))
            except Exception:  # noqa: BLE001 - the VM will come back Halted instead
                log.exception("could not save domain %s", rec["uuid"])
                path.unlink(missing_ok=True)

    async def restore_all(self) -> None:
        """Server start: bring back each Running/Paused VM, or mark it Halted if we cannot."""
        ctx = self.ctx()
        for vm, rec in list(ctx.store.all("VM").items()):
            if rec["is_control_domain"] or rec["power_state"] not in ("Running", "Paused"):
                continue
            path = self.state_dir / f"{rec['uuid']}.state"
            paused = rec["power_state"] == "Paused"
            try:
                dom = await self.agent.domains.resume(domain_config(ctx, vm), str(path), paused)
            except Exception as e:  # noqa: BLE001 - recorded as Halted, not left lying
                log.warning("VM %s could not be resumed (%s): marked Halted", rec["uuid"], e)
                mark_halted(ctx, vm)
            else:
                mark_running(ctx, vm, dom, paused)
            finally:
                if path.exists():
                    os.unlink(path)
        await ctx.store.sync()

    async def close(self) -> None:
        for t in list(self._jobs):
            t.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
