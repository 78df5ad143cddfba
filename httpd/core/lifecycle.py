"""What a VM's power state means in the database, in one place, and the domains behind them.

The API (VM.start, suspend, ...), guest-initiated halts and server restarts all go through
`Lifecycle.enter`, which writes what `power.STATES` says of the new state: VBD/VIF attachment,
consoles, metrics (VM_metrics.state included), domid, resident_on and allowed_operations always
agree with the power state. Services that follow VMs (statistics, console tunnels) connect to
`Lifecycle.vm_events`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import zlib
from concurrent.futures import Executor
from pathlib import Path
from typing import Protocol

from ..backends.base import DiskSpec, Domain, DomainBackend, DomainConfig, GuestEvent, NicSpec
from ..model.errors import XenAPIError
from ..model.store import Store
from ..model.xtypes import NULL_REF
from ..model.identity import ThisHost
from .devices import vbd_device
from ..jobs import Jobs
from .locations import Locations
from .messages import VM_CRASHED, post
from .nic_settings import effective_mtu, nic_settings
from .operations import refresh_allowed
from .power import LIVE, STATES
from .vdis import Vdis

__all__ = ["Lifecycle", "VMListener", "VMEvents"]

log = logging.getLogger(__name__)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class VMListener(Protocol):
    """Called synchronously on the event loop right after the database says so; keep them
    quick (schedule slow work) and never raise."""

    def vm_running(self, uuid: str) -> None: ...

    def vm_stopped(self, uuid: str) -> None:
        """Halted or suspended: its domain is gone."""

    def vm_destroyed(self, uuid: str) -> None: ...


class VMEvents:
    """The signal VM listeners connect to (like aiohttp's on_* signals)."""

    def __init__(self) -> None:
        self._listeners: list[VMListener] = []

    def connect(self, listener: VMListener) -> None:
        self._listeners.append(listener)

    def disconnect(self, listener: VMListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def send(self, event: str, uuid: str) -> None:
        for listener in list(self._listeners):
            try:
                getattr(listener, event)(uuid)
            except Exception:  # noqa: BLE001 - a listener's bug must not undo a power change
                log.exception("%s listener failed for %s", event, uuid)


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



def _device_order(device: str) -> tuple[int, str]:
    return (int(device), "") if device.isdigit() else (1 << 30, device)


class Lifecycle:
    """Power-state marks, guest-initiated transitions, and the save/restore of running domains
    across restarts."""

    def __init__(self, store: Store, host: ThisHost, locations: Locations, vdis: Vdis,
                 domains: DomainBackend, state_dir: Path,
                 executor: Executor | None = None) -> None:
        self.store = store
        self.executor = executor            # the state files' I/O (the disk pool)
        self.host = host
        self.locations = locations
        self.vdis = vdis
        self.domains = domains
        self.state_dir = state_dir
        self.vm_events = VMEvents()
        self._jobs = Jobs()
        self._ips: dict[str, str] = {}

    # --- what a domain is given ----------------------------------------------------------
    def disk_spec(self, vbd: str) -> DiskSpec | None:
        """What a domain is given of a VBD (None: an empty disk drive; an empty CD drive is
        a drive with no disc, path "")."""
        b = self.store.get("VBD", vbd)
        if b["empty"] or b["VDI"] == NULL_REF:
            if b["type"] == "CD":
                return DiskSpec(vbd_device(b["userdevice"]), "", True, cdrom=True)
            return None
        vdi = self.store.get("VDI", b["VDI"])
        return DiskSpec(vbd_device(b["userdevice"]), str(self.vdis.path(b["VDI"])),
                        b["mode"] == "RO" or vdi["read_only"], cdrom=b["type"] == "CD",
                        bootable=b["bootable"])

    def nic_spec(self, vif: str) -> NicSpec:
        v = self.store.get("VIF", vif)
        net = self.store.find("network", v["network"])
        return NicSpec(v["device"], v["MAC"], effective_mtu(v["other_config"], v["MTU"]),
                       nic_settings(v["other_config"]),
                       network=net["bridge"] if net is not None else "")

    def domain_config(self, vm: str) -> DomainConfig:
        store = self.store
        rec = store.get("VM", vm)
        disks = [d for d in map(self.disk_spec, rec["VBDs"]) if d is not None]
        disks.sort(key=lambda d: (not d.bootable, _device_order(d.device)))
        nics = [self.nic_spec(vif) for vif in rec["VIFs"]]
        oc = rec["other_config"]
        vm_data = tuple(sorted((k, v) for k, v in rec["xenstore_data"].items()
                               if k.startswith("vm-data/") or k == "vm-data"))
        hvm = rec["HVM_boot_policy"] != ""
        return DomainConfig(
            uuid=rec["uuid"], name=rec["name_label"], vcpus=max(1, rec["VCPUs_at_startup"]),
            memory=rec["memory_dynamic_max"] or rec["memory_static_max"], disks=tuple(disks),
            nics=tuple(nics), vm_data=vm_data,
            vnc=oc.get("disable_pv_vnc", "") not in ("1", "true"),
            boot_lines=_bootloader_lines(rec),
            bootloader="" if hvm else rec["PV_bootloader"],
            kernel="" if hvm else rec["PV_kernel"], ramdisk="" if hvm else rec["PV_ramdisk"],
            kernel_args=rec["PV_args"], hvm=hvm,
            boot_order=rec["HVM_boot_params"].get("order", "cd") if hvm else "",
            platform=tuple(sorted(rec["platform"].items())))

    def domain(self, rec: dict) -> Domain:
        dom = self.domains.get(rec["uuid"])
        if dom is None:
            raise XenAPIError("INTERNAL_ERROR", f"VM {rec['uuid']} has no running domain")
        return dom

    # --- the marks of each power state (power.STATES) --------------------------------------
    def enter(self, vm: str, state: str, *, dom: Domain | None = None,
              suspend_vdi: str = NULL_REF) -> None:
        """Record that `vm` is now in `state`. `dom`: a domain that just started (start,
        resume, reboot, restore): devices attach and consoles are made anew."""
        marks = STATES[state]
        store = self.store
        with store.transaction():
            rec = store.get("VM", vm)
            fields: dict = {"power_state": state, **marks.vm_fields}
            if marks.domain and dom is not None:
                self._attach(vm, rec, dom)
                fields.update({"domid": dom.domid, "resident_on": self.host.host_ref,
                               "memory_target": rec["memory_dynamic_max"]})
            elif not marks.domain:
                self._detach(rec)
                if state == "Suspended":
                    fields["suspend_VDI"] = suspend_vdi
            metrics = self._ensure_metrics(vm) if marks.domain else \
                (rec["metrics"] if store.find("VM_metrics", rec["metrics"]) else None)
            if metrics is not None:
                store.update("VM_metrics", metrics, {"state": list(marks.metrics_state),
                                                     "last_updated": _now()})
            store.update("VM", vm, fields)
            refresh_allowed(store, "VM", vm)
        if dom is not None or not marks.domain:
            self.vm_events.send("vm_running" if marks.domain else "vm_stopped", rec["uuid"])
        if not self.domains.domains_outlive_agent:
            self._jobs.spawn(self._persist(rec["uuid"]) if marks.domain
                             else self._forget_state(rec["uuid"]))

    def destroyed(self, uuid: str) -> None:
        self.vm_events.send("vm_destroyed", uuid)

    def _ensure_metrics(self, vm: str) -> str:
        store = self.store
        rec = store.get("VM", vm)
        if rec["metrics"] != NULL_REF and store.find("VM_metrics", rec["metrics"]) is not None:
            return rec["metrics"]
        metrics = store.create("VM_metrics", {"install_time": _now(), "last_updated": _now()})
        store.update("VM", vm, {"metrics": metrics})
        return metrics

    def _attach(self, vm: str, rec: dict, dom: Domain) -> None:
        store = self.store
        store.update("VM_metrics", self._ensure_metrics(vm), {
            "start_time": _now(), "VCPUs_number": rec["VCPUs_at_startup"],
            "memory_actual": rec["memory_dynamic_max"]})
        for vbd in rec["VBDs"]:
            b = store.get("VBD", vbd)
            # a CD drive is attached with or without a disc in it
            store.update("VBD", vbd, {"currently_attached": not b["empty"] or b["type"] == "CD",
                                      "device": vbd_device(b["userdevice"])})
            refresh_allowed(store, "VBD", vbd)
        for vif in rec["VIFs"]:
            v = store.get("VIF", vif)
            store.update("VIF", vif, {"currently_attached": True,
                                      "MTU": effective_mtu(v["other_config"], v["MTU"])})
            refresh_allowed(store, "VIF", vif)
        for c in list(store.get("VM", vm)["consoles"]):
            store.destroy("console", c)
        protocols = (("rfb",) if dom.vnc_address is not None else ()) + ("vt100",)
        for protocol in protocols:
            c = store.create("console", {"protocol": protocol, "VM": vm})
            store.update("console", c, {"location": self.locations.of_console(
                c, store.get("console", c))})

    def _detach(self, rec: dict) -> None:
        store = self.store
        for vbd in rec["VBDs"]:
            store.update("VBD", vbd, {"currently_attached": False})
            refresh_allowed(store, "VBD", vbd)
        for vif in rec["VIFs"]:
            store.update("VIF", vif, {"currently_attached": False})
            refresh_allowed(store, "VIF", vif)
        for c in list(rec["consoles"]):
            store.destroy("console", c)
        gm = rec["guest_metrics"]
        if gm != NULL_REF and store.find("VM_guest_metrics", gm) is not None:
            store.destroy("VM_guest_metrics", gm)
        if rec["metrics"] != NULL_REF and store.find("VM_metrics", rec["metrics"]) is not None:
            store.update("VM_metrics", rec["metrics"], {"memory_actual": 0})

    # --- guest-initiated transitions ------------------------------------------------------
    def on_guest_event(self, event: GuestEvent) -> None:
        self._jobs.spawn(self._guest_event(event))

    async def _guest_event(self, event: GuestEvent) -> None:
        store = self.store
        try:
            vm = store.ref_of_uuid("VM", event.uuid)
        except XenAPIError:
            return
        dom = self.domains.get(event.uuid)
        if dom is None:
            return
        if event.kind == "guest_metrics":
            self.update_guest_metrics(vm, dom)
            await store.sync()
            return
        rec = store.get("VM", vm)
        action = rec["actions_after_shutdown"] if event.kind == "halt" else \
            rec["actions_after_reboot"]
        try:
            if action == "restart":
                await dom.reboot(clean=True)
                self.enter(vm, "Running", dom=dom)
            else:      # a guest that rebooted but must not restart is stopped at once
                await dom.shutdown(clean=event.kind == "halt")
                self.enter(vm, "Halted")
            await store.sync()
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

    def update_guest_metrics(self, vm: str, dom: Domain) -> None:
        store = self.store
        report = dom.guest_report()
        rec = store.find("VM", vm)
        if report is None or rec is None or rec["power_state"] not in LIVE:
            return
        networks = report.get("networks")        # what the guest itself says, if it does
        if networks is None:
            networks = {}
            for vif in rec["VIFs"]:
                v = store.get("VIF", vif)
                if v["device"] in report["nics"]:
                    networks[f"{v['device']}/ip"] = self.guest_ip(v["uuid"])
        fields = {"os_version": report["os_version"],
                  "PV_drivers_version": report["PV_drivers_version"],
                  "PV_drivers_up_to_date": True, "PV_drivers_detected": True,
                  "memory": report["memory"],
                  "networks": networks, "other": report["other"], "live": True,
                  "last_updated": _now(), "can_use_hotplug_vbd": "yes",
                  "can_use_hotplug_vif": "yes"}
        with store.transaction():
            gm = rec["guest_metrics"]
            if gm != NULL_REF and store.find("VM_guest_metrics", gm) is not None:
                store.update("VM_guest_metrics", gm, fields)
            else:
                gm = store.create("VM_guest_metrics", fields)
                store.update("VM", vm, {"guest_metrics": gm})

    async def migrate_here(self, vm: str) -> Domain:
        """A localhost migration: the running domain's state into a new domain on this host;
        the caller records it with `enter`. If the new domain cannot start, the VM is Halted
        (its old domain is gone) and the error is raised."""
        rec = self.store.get("VM", vm)
        dom = self.domain(rec)
        loop = asyncio.get_running_loop()
        path = self.state_dir / f"{rec['uuid']}.migrate"
        try:
            await self._blank(path)
            await dom.suspend(str(path))
            try:
                return await self.domains.resume(self.domain_config(vm), str(path), dom.paused)
            except Exception as e:
                self.enter(vm, "Halted")
                raise XenAPIError("VM_MIGRATE_FAILED", vm, self.host.host_ref,
                                  self.host.host_ref, f"the new domain did not start: {e}") \
                    from None
        finally:
            await loop.run_in_executor(self.executor, lambda: path.unlink(missing_ok=True))

    # --- across restarts --------------------------------------------------------------------
    def _state_path(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.state"

    async def _blank(self, path: Path) -> None:
        """An empty file at `path` in the state directory: a domain's save/suspend writes over
        it (as it does over a suspend VDI)."""
        def make() -> None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
        await asyncio.get_running_loop().run_in_executor(self.executor, make)

    async def _persist(self, uuid: str) -> None:
        """A running domain's state on disk now (written aside, then renamed over the last
        one), so even a kill -9 of the agent finds it at the next start."""
        dom = self.domains.get(uuid)
        if dom is None:
            return
        path = self._state_path(uuid)
        tmp = path.with_name(path.name + ".tmp")
        loop = asyncio.get_running_loop()
        try:
            await self._blank(tmp)
            await dom.save(str(tmp))
            if self.domains.get(uuid) is dom:     # not stopped meanwhile
                await loop.run_in_executor(self.executor, os.replace, tmp, path)
        except Exception:  # noqa: BLE001 - the next save tries again
            log.exception("could not keep the state of domain %s", uuid)
        finally:
            await loop.run_in_executor(self.executor, lambda: tmp.unlink(missing_ok=True))

    async def _forget_state(self, uuid: str) -> None:
        path = self._state_path(uuid)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, lambda: path.unlink(missing_ok=True))

    def persist_running(self) -> None:
        """Housekeeping: refresh every running domain's state on disk (see `_persist`)."""
        if self.domains.domains_outlive_agent:
            return
        for rec in self.store.all("VM").values():
            if not rec["is_control_domain"] and rec["power_state"] in LIVE and \
                    rec["resident_on"] == self.host.host_ref:
                self._jobs.spawn(self._persist(rec["uuid"]))

    async def save_all(self) -> None:
        """Server shutdown: every running domain's state to disk, to be resumed at next start
        (domains that outlive the agent just run on)."""
        if self.domains.domains_outlive_agent:
            return
        for ref, rec in list(self.store.all("VM").items()):
            dom = self.domains.get(rec["uuid"])
            if dom is None or rec["is_control_domain"]:
                continue
            path = self._state_path(rec["uuid"])
            try:
                await self._blank(path)
                await dom.suspend(str(path))
            except Exception:  # noqa: BLE001 - the VM will come back Halted instead
                log.exception("could not save domain %s", rec["uuid"])
                path.unlink(missing_ok=True)

    async def restore_all(self) -> None:
        """Server start: bring back each Running/Paused VM of this host, or mark it Halted if
        we cannot (in a pool, other hosts' VMs are their agents')."""
        for vm, rec in list(self.store.all("VM").items()):
            if rec["is_control_domain"] or rec["power_state"] not in LIVE or \
                    rec["resident_on"] not in (self.host.host_ref, NULL_REF):
                continue
            path = self._state_path(rec["uuid"])
            state = rec["power_state"]
            try:
                if self.domains.domains_outlive_agent:
                    dom = await self.domains.attach(self.domain_config(vm), state == "Paused")
                else:
                    dom = await self.domains.resume(self.domain_config(vm), str(path),
                                                    state == "Paused")
            except Exception as e:  # noqa: BLE001 - recorded as Halted, not left lying
                how = "found again" if self.domains.domains_outlive_agent else "resumed"
                log.warning("VM %s could not be %s (%s): marked Halted", rec["uuid"], how, e)
                with self.store.transaction():
                    self.enter(vm, "Halted")
                    post(self.store, *VM_CRASHED, "VM", rec["uuid"],
                         f"The VM was {state} when the agent stopped, and could not be {how} "
                         f"at its start ({e}): it is Halted now.")
            else:
                self.enter(vm, state, dom=dom)
            finally:
                path.unlink(missing_ok=True)
        await self.store.sync()

    async def close(self) -> None:
        await self._jobs.close()
