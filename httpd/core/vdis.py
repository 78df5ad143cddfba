"""VDIs on this host's SRs: which file backs a VDI, and creating, copying and destroying them
so that a file and its record exist together or not at all.

File work runs on the disk pool. A new VDI's record is durable before its file is written,
marked `unfinished` until the file is complete (a copy) or for as long as the caller's
operation says (an import), so a crash anywhere leaves nothing the next start does not remove:
never a file without a record, never a half-copied disk that looks whole.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

from ..model.errors import XenAPIError
from ..model.store import Store, new_uuid
from ..model.xtypes import NULL_REF
from ..model.identity import ThisHost
from .filesr import FileSR
from .operations import refresh_allowed
from .unfinished import clear, mark

__all__ = ["Vdis"]

log = logging.getLogger(__name__)

_COPY_KEEP = ("name_label", "name_description", "type", "sharable", "read_only", "other_config",
              "xenstore_data", "sm_config", "tags")


class Vdis:
    def __init__(self, store: Store, host: ThisHost, executor: Executor | None = None) -> None:
        self.store = store
        self.host = host
        self.executor = executor

    async def _run(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def sr_backend(self, sr: str) -> FileSR:
        """The FileSR behind `sr` through its attached PBD on this host."""
        store = self.store
        rec = store.get("SR", sr)
        for pbd in rec["PBDs"]:
            p = store.get("PBD", pbd)
            if p["host"] == self.host.host_ref:
                if not p["currently_attached"]:
                    raise XenAPIError("SR_NOT_ATTACHED", sr)
                path = p["device_config"].get("path")
                if not path:
                    raise XenAPIError("SR_BACKEND_FAILURE", "no device_config:path", sr)
                return FileSR(path, ".iso" if rec["type"] == "iso" else ".raw")
        raise XenAPIError("SR_HAS_NO_PBDS", sr)

    def path(self, vdi: str) -> Path:
        """The file that holds `vdi`'s data."""
        rec = self.store.get("VDI", vdi)
        return self.sr_backend(rec["SR"]).vdi_path(rec["location"])

    def default_sr(self) -> str:
        sr = self.store.get("pool", self.host.pool_ref)["default_SR"]
        if sr == NULL_REF or self.store.find("SR", sr) is None:
            raise XenAPIError("DEFAULT_SR_NOT_FOUND", sr)
        return sr

    async def sweep_side_files(self) -> int:
        """At start: the side files of uploads a crash cut short, on every attached SR."""
        count = 0
        for sr in list(self.store.all("SR")):
            try:
                backend = self.sr_backend(sr)
            except XenAPIError:
                continue
            try:
                gone = await self._run(backend.sweep_side_files)
            except OSError:
                continue
            if gone:
                log.warning("removed %d unfinished upload file(s) in %s", len(gone), backend.path)
            count += len(gone)
        return count

    async def refresh_sr(self, sr: str) -> None:
        """SR sizes from the filesystem (statvfs, on the disk pool); virtual_allocation from
        the VDIs."""
        try:
            stats = await self._run(self.sr_backend(sr).stats)
        except (XenAPIError, OSError):
            return
        rec = self.store.find("SR", sr)
        if rec is None:
            return
        alloc = sum(self.store.get("VDI", v)["virtual_size"] for v in rec["VDIs"])
        self.store.update("SR", sr, {"physical_size": stats.physical_size,
                                     "physical_utilisation": stats.physical_utilisation,
                                     "virtual_allocation": alloc})

    async def refresh(self, vdi: str) -> None:
        """physical_utilisation from the file's allocated blocks."""
        rec = self.store.find("VDI", vdi)
        if rec is None:
            return
        used = await self._run(self.sr_backend(rec["SR"]).allocated, rec["location"])
        rec = self.store.find("VDI", vdi)
        if rec is not None and used != rec["physical_utilisation"]:
            self.store.update("VDI", vdi, {"physical_utilisation": used})

    async def create(self, sr: str, size: int, fields: dict, *,
                     unfinished: str | None = None) -> str:
        """A sparse file and its record, or neither. The record is durable before the file
        exists, so a crash in between leaves a record (swept or forgotten by SR.scan), never an
        orphan file nobody knows of. `unfinished`: the task of an operation that is still
        filling it (the mark stays until that operation clears it)."""
        backend = self.sr_backend(sr)
        uuid = new_uuid()
        with self.store.transaction():
            vdi = self.store.create("VDI", {
                "type": "user", **fields, "uuid": uuid, "SR": sr, "virtual_size": size,
                "location": uuid, "physical_utilisation": 0})
            if unfinished is not None:
                mark(self.store, "VDI", vdi, unfinished, self.host.host_ref)
            refresh_allowed(self.store, "VDI", vdi)
        try:
            await self.store.sync()
            await self._run(backend.create, uuid, size)
        except BaseException:
            await self._forget(vdi)
            raise
        await self.refresh(vdi)
        await self.refresh_sr(sr)
        return vdi

    async def copy(self, vdi: str, sr: str | None = None, fields: dict | None = None, *,
                   check: Callable[[int], None] | None = None, digest: bool = False) -> str:
        """A sparse copy (a reflink where the filesystem can) of `vdi`, in `sr` or its own SR.
        `check(bytes_done)` runs in the copying thread between extents and may raise to stop.
        The new record is durable, and marked unfinished, before the copy starts. `digest`:
        see `FileSR.copy_from`."""
        src = self.store.get("VDI", vdi)
        sr = sr if sr and sr != NULL_REF else src["SR"]
        src_path = self.path(vdi)
        dst = self.sr_backend(sr)
        uuid = new_uuid()
        with self.store.transaction():
            new = self.store.create("VDI", {
                **{k: src[k] for k in _COPY_KEEP}, **(fields or {}), "uuid": uuid,
                "SR": sr, "virtual_size": src["virtual_size"], "location": uuid,
                "physical_utilisation": 0})
            mark(self.store, "VDI", new, None, self.host.host_ref)
            refresh_allowed(self.store, "VDI", new)
        try:
            await self.store.sync()
            try:
                await self._run(functools.partial(dst.copy_from, digest=digest), src_path,
                                uuid, src["virtual_size"], check)
            except FileNotFoundError:
                raise XenAPIError("VDI_MISSING", src["SR"], vdi) from None
            used = await self._run(dst.allocated, uuid)
            with self.store.transaction():
                self.store.update("VDI", new, {"physical_utilisation": used})
                clear(self.store, [new])
        except BaseException:
            await self._forget(new)
            raise
        await self.refresh_sr(sr)
        return new

    async def snapshot(self, vdi: str, sr: str | None = None,
                       at: _dt.datetime | None = None) -> str:
        """A snapshot of `vdi`: a copy (see `copy`) marked `is_a_snapshot`, `snapshot_of` it,
        taken `at` (now; VM.snapshot gives its disks the VM snapshot's time)."""
        at = at or _dt.datetime.now(_dt.timezone.utc)
        return await self.copy(vdi, sr, {"is_a_snapshot": True, "snapshot_of": vdi,
                                         "snapshot_time": at}, digest=True)

    async def _forget(self, vdi: str) -> None:
        """A VDI whose making failed goes (record, mark, file), without hiding that failure."""
        if self.store.find("VDI", vdi) is None:
            return
        try:
            await self.destroy(vdi)
        except (OSError, XenAPIError):
            log.exception("could not remove VDI %s, whose making failed", vdi)

    async def destroy(self, vdi: str) -> None:
        """The record (and its VBDs), then the file (on the disk pool)."""
        store = self.store
        rec = store.get("VDI", vdi)
        for vbd in rec["VBDs"]:
            if store.get("VBD", vbd)["currently_attached"]:
                raise XenAPIError("VDI_IN_USE", vdi, "destroy")
        try:
            backend = self.sr_backend(rec["SR"])
        except XenAPIError:
            backend = None
        with store.transaction():
            for vbd in rec["VBDs"]:
                store.destroy("VBD", vbd)
            store.destroy("VDI", vdi)
            clear(store, [vdi])
        if backend is not None:
            await self._run(backend.destroy, rec["location"])
            await self.refresh_sr(rec["SR"])
