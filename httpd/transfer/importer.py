"""VM import in terms of the object store: what an XVA's metadata creates.

The byte work is `xva/` (sans-IO readers, fed by `web.transfer`); this module turns an
import's metadata into records. Everything an import creates is marked `unfinished`
(core.unfinished) until the import succeeds, so a failure — or a crash, swept at the next
start — removes all of it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from xva.appliance import Appliance

from ..core.context import Ctx
from ..core.devices import new_mac
from ..core.operations import refresh_allowed
from ..core.unfinished import clear, mark, marked
from ..core.vdis import Vdis
from ..model.datamodel import CLASSES, RO
from ..model.errors import XenAPIError
from ..model.store import Store
from ..model.xtypes import NULL_REF
from .metadata import ExportObject, parse_ova_xml

__all__ = ["ImportJob", "sweep_unfinished"]

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"^(?:sd|xvd|hd)([a-z])$")


# --- import ---------------------------------------------------------------------------------
@dataclass
class ImportJob:
    """One import: the records it made so far, so a failure can remove exactly those."""

    ctx: Ctx
    sr: str
    restore: bool = False
    force: bool = False
    metadata_only: bool = False
    dry_run: bool = False
    vms: list[str] = field(default_factory=list)
    vdis: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)     # disk id in the XVA -> file
    # restore=true of a VM whose uuid is taken: new VM -> (the VM it replaces, the uuid),
    # swapped in by commit() only, so a failed import leaves the old VM as it was
    replaces: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def _new_vdi(self, disk_id: str, size: int, fields: dict) -> str:
        vdi = await self.ctx.vdis.create(self.sr, size, fields, unfinished=self.ctx.task or "")
        self.vdis.append(vdi)
        self.paths[disk_id] = str(self.ctx.vdis.path(vdi))
        return vdi

    # the guide's appliance layout
    async def from_appliance(self, app: Appliance) -> None:
        store = self.ctx.store
        vdi_refs = {}
        for v in app.vdis:
            vdi_refs[v.name] = await self._new_vdi(v.name, v.size, {
                "name_label": f"{app.vm.label} {v.directory}", "type": "user"})
        with store.transaction():
            mem = max(app.vm.mem_set, 16 * 2**20)
            vm = self._create_vm({
                "name_label": app.vm.label, "name_description": app.vm.shortdesc,
                "memory_static_max": mem, "memory_dynamic_max": mem, "memory_dynamic_min": mem,
                "memory_static_min": min(mem, 16 * 2**20), "VCPUs_max": max(1, app.vm.vcpus),
                "VCPUs_at_startup": max(1, app.vm.vcpus), "PV_args": app.vm.kernel_boot_cmdline,
                "HVM_boot_policy": "BIOS order" if app.vm.is_hvm else "",
                "PV_bootloader": "" if app.vm.is_hvm else "pygrub",
                "domain_type": "hvm" if app.vm.is_hvm else "pv"})
            used: set[str] = set()
            for b in app.vm.vbds:
                m = _DEVICE.match(b.device)
                ud = str(ord(m.group(1)) - ord("a")) if m else str(len(used))
                while ud in used:
                    ud = str(int(ud) + 1) if ud.isdigit() else str(len(used))
                used.add(ud)
                store.create("VBD", {"VM": vm, "VDI": vdi_refs[b.vdi], "userdevice": ud,
                                     "bootable": b.function == "root",
                                     "mode": "RO" if b.mode == "ro" else "RW", "type": "Disk",
                                     "device": b.device})

    # the layout xapi writes
    async def from_ova_xml(self, data: bytes) -> dict[str, int]:
        """Create what ova.xml describes; returns the disks the reader must expect."""
        objects = parse_ova_xml(data)
        by_id = {o.id: o for o in objects}
        vms = [o for o in objects if o.cls == "VM" and not o.snapshot.get("is_a_snapshot")]
        if not vms:
            raise XenAPIError("IMPORT_ERROR", "ova.xml has no VM")
        for o in vms:
            self._check_restore(o.snapshot)
        wanted: dict[str, int] = {}
        vdi_map: dict[str, str] = {}
        for o in objects:
            if o.cls != "VDI" or not self._used_vdi(o, objects):
                continue
            if self.metadata_only:
                vdi_map[o.id] = self._existing_vdi(o)
                continue
            size = o.snapshot.get("virtual_size", 0)
            if size < 0:
                raise XenAPIError("IMPORT_ERROR", f"{o.id}: negative virtual_size")
            if self.dry_run:
                continue
            keep = {k: o.snapshot[k] for k in ("name_label", "name_description", "type",
                                                "sharable", "read_only", "other_config", "tags",
                                                "xenstore_data", "sm_config")
                    if k in o.snapshot}
            vdi_map[o.id] = await self._new_vdi(o.id, size, keep)
            wanted[o.id] = size
        if self.dry_run:
            return {}
        with self.ctx.store.transaction():
            for vm_obj in vms:
                self._vm_from_object(vm_obj, by_id, vdi_map)
        return wanted

    def _check_restore(self, snap: dict) -> None:
        """restore=true keeps the VM's uuid; where a VM has it already, as xapi: a halted one
        is replaced if the import's `version` is newer (or force=true), else
        VM_TO_IMPORT_IS_NOT_NEWER_VERSION; one that is not halted fails the import with
        VM_BAD_POWER_STATE (xapi skips it under force=true; here force does not: a skipped
        VM's disks would still be in the stream)."""
        uuid = snap.get("uuid")
        if not self.restore or not uuid or not _taken(self.ctx.store, "VM", uuid):
            return
        old = self.ctx.store.ref_of_uuid("VM", uuid)
        rec = self.ctx.store.get("VM", old)
        if rec["power_state"] != "Halted":
            raise XenAPIError("VM_BAD_POWER_STATE", old, "halted", rec["power_state"].lower())
        theirs = int(snap.get("version", 0) or 0)
        if rec["version"] >= theirs and not self.force:
            raise XenAPIError("VM_TO_IMPORT_IS_NOT_NEWER_VERSION", old, str(rec["version"]),
                              str(theirs))

    @staticmethod
    def _used_vdi(vdi: ExportObject, objects: list[ExportObject]) -> bool:
        return any(o.cls == "VBD" and o.snapshot.get("VDI") == vdi.id for o in objects)

    def _existing_vdi(self, o: ExportObject) -> str:
        try:
            return self.ctx.store.ref_of_uuid("VDI", o.snapshot.get("uuid", ""))
        except XenAPIError:
            raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT",
                              o.snapshot.get("uuid", o.id)) from None

    def _vm_from_object(self, vm_obj: ExportObject, by_id: dict, vdi_map: dict) -> str:
        store = self.ctx.store
        snap = vm_obj.snapshot
        fields = {f.name: snap[f.name] for f in CLASSES["VM"].fields
                  if f.name in snap and (f.qualifier != RO or f.name in
                                         ("is_a_template", "blobs")) and not f.reverse}
        for name in ("affinity", "suspend_VDI", "resident_on", "metrics", "guest_metrics"):
            fields.pop(name, None)
        restored = snap.get("uuid") if self.restore else None
        if restored and not _taken(store, "VM", restored):
            fields["uuid"] = restored
            restored = None
        vm = self._create_vm(fields)
        if restored:          # its uuid is another VM's until commit() replaces that one
            self.replaces[vm] = (store.ref_of_uuid("VM", restored), restored)
        for vbd_id in snap.get("VBDs", []):
            b = by_id.get(vbd_id)
            if b is None or b.cls != "VBD":
                raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", vbd_id)
            s = b.snapshot
            vdi = vdi_map.get(s.get("VDI", NULL_REF), NULL_REF)
            store.create("VBD", {
                "VM": vm, "VDI": vdi, "userdevice": s.get("userdevice", "0"),
                "bootable": s.get("bootable", False), "mode": s.get("mode", "RW"),
                "type": s.get("type", "Disk"), "empty": vdi == NULL_REF,
                "unpluggable": s.get("unpluggable", True), "other_config": s.get("other_config", {}),
                "device": s.get("device", "")})
        for vif_id in snap.get("VIFs", []):
            v = by_id.get(vif_id)
            if v is None or v.cls != "VIF":
                raise XenAPIError("IMPORT_ERROR_FAILED_TO_FIND_OBJECT", vif_id)
            s = v.snapshot
            net = self._network_for(by_id.get(s.get("network", "")))
            mac = s.get("MAC", "") if self.restore and s.get("MAC") else new_mac()
            store.create("VIF", {"VM": vm, "network": net, "device": s.get("device", "0"),
                                 "MAC": mac, "MAC_autogenerated": not self.restore,
                                 "MTU": s.get("MTU", 1500), "other_config": s.get("other_config", {})})
        return vm

    def _network_for(self, net_obj: ExportObject | None) -> str:
        """Same uuid, else same bridge, else a new network named as in the export."""
        store = self.ctx.store
        if net_obj is not None:
            snap = net_obj.snapshot
            for ref, rec in store.all("network").items():
                if rec["uuid"] == snap.get("uuid"):
                    return ref
            for ref, rec in store.all("network").items():
                if snap.get("bridge") and rec["bridge"] == snap.get("bridge"):
                    return ref
            return store.create("network", {"name_label": snap.get("name_label", "imported"),
                                            "name_description": "created by a VM import",
                                            "bridge": f"xapi{len(store.all('network'))}",
                                            "MTU": snap.get("MTU", 1500)})
        return next(iter(store.all("network")))

    def _create_vm(self, fields: dict) -> str:
        store = self.ctx.store
        with store.transaction():
            metrics = store.create("VM_metrics", {})
            # the VM carries `import` while its disks stream in (the reference)
            vm = store.create("VM", {**fields, "power_state": "Halted", "metrics": metrics,
                                     "domid": -1,
                                     "current_operations": {self.ctx.task or "import": "import"}})
            mark(store, "VM", vm, self.ctx.task, self.ctx.host.host_ref)
            refresh_allowed(self.ctx.store, "VM", vm)
        self.vms.append(vm)
        return vm

    async def commit(self) -> None:
        """Success: unmark everything, so a later sweep leaves it alone."""
        store = self.ctx.store
        with store.transaction():
            for new, (old, uuid) in self.replaces.items():
                _destroy_vm_records(store, old)        # its disks stay, as xapi leaves them
                store.update("VM", new, {"uuid": uuid})
            for cls, refs in (("VM", self.vms), ("VDI", self.vdis)):
                for ref in refs:
                    if store.find(cls, ref) is not None:
                        store.update(cls, ref, {"current_operations": {}})
                        refresh_allowed(self.ctx.store, cls, ref)
            clear(store, [*self.vms, *self.vdis])
        for vdi in self.vdis:
            await self.ctx.vdis.refresh(vdi)

    async def rollback(self) -> None:
        """Failure: remove every VM, VBD, VIF, VDI and file this import created."""
        await remove_created(self.ctx.store, self.ctx.vdis, self.vms, self.vdis)


async def remove_created(store: Store, disks: Vdis, vms: list[str], vdis: list[str]) -> None:
    for vm in vms:
        rec = store.find("VM", vm)
        if rec is None:
            continue
        with store.transaction():
            _destroy_vm_records(store, vm)
            clear(store, [vm])
    for vdi in vdis:
        if store.find("VDI", vdi) is not None:
            try:
                await disks.destroy(vdi)
            except XenAPIError:
                log.exception("could not remove VDI %s of a failed import", vdi)


def _destroy_vm_records(store: Store, vm: str) -> None:
    """The VM's record with its VBDs, VIFs, consoles and metrics (not its VDIs)."""
    rec = store.get("VM", vm)
    for cls, fname in (("VBD", "VBDs"), ("VIF", "VIFs"), ("console", "consoles")):
        for ref in rec[fname]:
            store.destroy(cls, ref)
    if rec["metrics"] != NULL_REF and store.find("VM_metrics", rec["metrics"]):
        store.destroy("VM_metrics", rec["metrics"])
    store.destroy("VM", vm)


def _taken(store, cls: str, uuid: str) -> bool:
    try:
        store.ref_of_uuid(cls, uuid)
        return True
    except XenAPIError:
        return False


async def sweep_unfinished(store: Store, disks: Vdis, host: str) -> int:
    """At start: what a crash of `host`'s agent left half-made (imports' VMs and VDIs,
    copies' VDIs, all marked `unfinished`); remove it, and the marks."""
    left = marked(store, host)
    vms = [r for r in left.get("VM", []) if store.find("VM", r) is not None]
    vdis = [r for r in left.get("VDI", []) if store.find("VDI", r) is not None]
    if vms or vdis:
        log.warning("removing %d VMs and %d VDIs that a crash left half-made",
                    len(vms), len(vdis))
        await remove_created(store, disks, vms, vdis)
    clear(store, [r for refs in left.values() for r in refs])
    return len(vms) + len(vdis)
