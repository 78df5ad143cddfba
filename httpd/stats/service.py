"""Performance statistics of this host: the collector and the host's RRD set.

Three layers, each usable on its own:

* readings: pure functions turning what the machine (``/proc``) and the domain backend
  (``DomainCounters``) say into ``{data source name: value}`` (:class:`ProcReader`,
  :func:`vm_readings`, :func:`dom0_readings`);
* :class:`RRDSet`: the :class:`rrd.engine.RRDStore` of this host, the data source
  definitions, one ``RRDStore.tick`` per collection, files under ``<data_dir>/rrd`` (dump XML,
  atomic with a daily backup, via :mod:`rrd.persist`) and a cache of formatted archive rows
  for ``/rrd_updates``;
* :class:`StatsService`: the agent's wiring: a collector task every ``stats_interval`` seconds
  on integer timestamps, loads/saves/deletes following VM start/stop/destroy
  (``Lifecycle.vm_events``), periodic and shutdown saves, legacy ``host_metrics``/``VM_metrics``,
  and after each tick the formatting of the rows pollers will ask for (``warm``), so that an
  ``/rrd_updates`` poll only joins cached text.

RRD ids: ``host:<uuid>``, ``vm:<uuid>`` (the control domain included), ``sr:<uuid>``; legends
come out as ``AVERAGE:vm:<uuid>:cpu0``. The store is only touched on the event loop; file work
and rendering run in executors on copies (``RRDStore.export``/``xport`` return copies).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
import datetime as _dt
import logging
import math
import time
from pathlib import Path
from typing import Iterable

from rrd import persist
from rrd.engine import CF, LAYOUT, RRDStore
from rrd.errors import RRDUsageError
from rrd.updates import warm_rows

from ..backends.base import DomainBackend
from ..model.identity import ThisHost
from ..jobs import run_soon
from ..model.store import Store
from ..model.xtypes import NULL_REF
from .sources import HOST, ProcReader, SR, VM, _CPU, _safe, dom0_readings, rrd_id, vm_readings
from .rrdset import RRDSet, delete_files, load_file, ring_reach

__all__ = ["StatsService"]

log = logging.getLogger(__name__)

_DEMAND_TTL = 900.0   # seconds an rrd_updates shape stays warm after its last poll


class StatsService:
    """The collector and the lifecycle of the host's RRD files (connected to ``Lifecycle.vm_events``)."""

    def __init__(self, store: Store, host: ThisHost, domains: DomainBackend, directory: Path, *,
                 interval: int = 5, save_interval: float = 3600.0, proc: str = "/proc",
                 executor: Executor | None = None) -> None:
        self.db = store
        self.host = host
        self.domains = domains
        self.executor = executor
        self.interval = max(1, int(interval))
        self.save_interval = save_interval
        self.rrds = RRDSet(directory)
        self.reader = ProcReader(proc)
        self._vm_prev: dict[str, tuple[float, tuple[float, ...]]] = {}
        self._vbd_prev: dict[tuple[str, str], tuple[int, int]] = {}
        self._failing: set[str] = set()
        self._chains: dict[str, asyncio.Task] = {}
        self._jobs: set[asyncio.Task] = set()
        self._collector: asyncio.Task | None = None
        self._last_legacy = 0
        self.ticks = 0
        # (span, cf) -> when /rrd_updates last asked for it (monotonic); the 5 s AVERAGE
        # level is always kept formatted, other levels while pollers ask for them.
        self._demand: dict[tuple[int, str], float] = {}
        self._warming: asyncio.Task | None = None

    @property
    def store(self) -> RRDStore:
        return self.rrds.store

    @property
    def host_rid(self) -> str:
        return rrd_id(HOST, self.db.get("host", self.host.host_ref)["uuid"])

    @property
    def dom0_uuid(self) -> str:
        return self.db.get("VM", self.host.dom0_ref)["uuid"]

    def _pool_min_max(self) -> bool:
        pools = self.db.all("pool")
        oc = next(iter(pools.values()))["other_config"] if pools else {}
        return oc.get("create_min_max_in_new_VM_RRDs", "").lower() in ("true", "1", "yes")

    # -- start / stop --
    async def start(self) -> None:
        self.rrds.directory.mkdir(parents=True, exist_ok=True)
        swept = await asyncio.get_running_loop().run_in_executor(
            self.executor, persist.sweep_temporaries, self.rrds.directory)
        if swept:
            log.warning("removed %d RRD files a crash left half-written: %s", len(swept),
                        ", ".join(swept[:5]))
        now = int(time.time())
        await self._load_or_create(self.host_rid, True, now)
        await self._load_or_create(rrd_id(VM, self.dom0_uuid), self._pool_min_max(), now)
        for uuid in self._resident_vms():
            self.vm_running(uuid)
        for uuid in self._local_srs():
            self._chain(rrd_id(SR, uuid), self._load_or_create(rrd_id(SR, uuid), False, now))
        self._collector = run_soon(self._collect_loop(), self._jobs)
        run_soon(self._save_loop(), self._jobs)

    async def stop(self) -> None:
        for t in list(self._jobs):
            if t not in self._chains.values():
                t.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.save_all()

    def _resident_vms(self) -> list[str]:
        out = []
        for rec in self.db.all("VM").values():
            if rec["is_control_domain"] or rec["power_state"] not in ("Running", "Paused"):
                continue
            if self.domains.get(rec["uuid"]) is not None:
                out.append(rec["uuid"])
        return out

    def _local_srs(self) -> list[str]:
        st = self.db
        return sorted({st.get("SR", p["SR"])["uuid"] for p in st.all("PBD").values()
                       if p["host"] == self.host.host_ref and st.find("SR", p["SR"])})

    # -- per-RRD file work, in order per RRD --
    def _chain(self, rid: str, coro) -> asyncio.Task:
        prev = self._chains.get(rid)

        async def run() -> None:
            if prev is not None:
                await asyncio.gather(prev, return_exceptions=True)
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - statistics must never take the service down
                log.exception("statistics: %s failed", rid)

        task = run_soon(run(), self._jobs)
        self._chains[rid] = task
        task.add_done_callback(lambda t: self._chains.get(rid) is t and self._chains.pop(rid))
        return task

    async def _load_or_create(self, rid: str, with_min_max: bool, now: int | None = None
                              ) -> None:
        if rid in self.store:
            return
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(self.executor, load_file, self.rrds.path(rid))
        if rid in self.store:
            return
        if state is not None:
            try:
                self.rrds.install(rid, state)
                return
            except RRDUsageError as e:
                log.error("statistics file for %s cannot be used (%s): starting anew", rid, e)
                self.rrds.remove(rid)
        self.rrds.create(rid, int(now or time.time()), with_min_max)

    async def save(self, rid: str) -> None:
        if rid not in self.store:
            return
        state = self.store.export(rid)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, persist.save, self.rrds.path(rid), state, int(time.time()))

    async def _unload(self, rid: str) -> None:
        if rid not in self.store:
            return
        state = self.store.export(rid)
        self.rrds.remove(rid)
        await asyncio.get_running_loop().run_in_executor(
            self.executor, persist.save, self.rrds.path(rid), state, int(time.time()))

    async def _destroy(self, rid: str) -> None:
        self.rrds.remove(rid)
        await asyncio.get_running_loop().run_in_executor(self.executor, delete_files,
                                                         self.rrds.path(rid))

    async def save_all(self) -> None:
        await asyncio.gather(*list(self._chains.values()), return_exceptions=True)
        for rid in self.store.rrd_ids():
            try:
                await self.save(rid)
            except Exception:  # noqa: BLE001 - e.g. disk full: the last saved file stays
                log.exception("statistics: could not save %s", rid)

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.save_interval)
            await self.save_all()

    # -- VMListener --
    def vm_running(self, uuid: str) -> None:
        self._chain(rrd_id(VM, uuid), self._load_or_create(rrd_id(VM, uuid),
                                                            self._pool_min_max()))

    def vm_stopped(self, uuid: str) -> None:
        self._forget_vm(uuid)
        self._chain(rrd_id(VM, uuid), self._unload(rrd_id(VM, uuid)))

    def vm_destroyed(self, uuid: str) -> None:
        self._forget_vm(uuid)
        self._chain(rrd_id(VM, uuid), self._destroy(rrd_id(VM, uuid)))

    def _forget_vm(self, uuid: str) -> None:
        self._vm_prev.pop(uuid, None)
        for k in [k for k in self._vbd_prev if k[0] == uuid]:
            del self._vbd_prev[k]

    # -- collection --
    async def _collect_loop(self) -> None:
        iv = self.interval
        while True:
            now = time.time()
            t = (int(now) // iv + 1) * iv
            # never a sample stamped in the future: the loop's timer may fire a little early,
            # and a poll's `start=now-600` must still reach back no further than the 5 s ring
            while (delay := t - time.time()) > 0:
                await asyncio.sleep(delay)
            try:
                await self.collect(int(t))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad tick must not end collection
                log.exception("statistics collection failed")

    def _pif_devices(self) -> list[str]:
        return [p["device"] for p in self.db.all("PIF").values()
                if p["host"] == self.host.host_ref]

    async def collect(self, t: int) -> None:
        """One collection at integer time ``t``: sample everything, one RRDStore.tick."""
        loop = asyncio.get_running_loop()
        host = await loop.run_in_executor(self.executor, self.reader.readings, self._pif_devices())
        st = self.db
        host["pool_session_count"] = float(len(st.all("session")))
        host["pool_task_count"] = float(len(st.all("task")))
        readings: dict[str, dict[str, float]] = {self.host_rid: host}
        dom0 = self.dom0_uuid
        readings[rrd_id(VM, dom0)] = dom0_readings(host)
        mono = time.monotonic()
        sr_io: dict[str, list[float]] = {}
        vbd_sr = self._vbd_srs()
        vm_values: dict[str, dict[str, float]] = {}
        for rid in self.rrds.ids(VM):
            uuid = rid[3:]
            if uuid == dom0:
                continue
            try:
                dom = self.domains.get(uuid)
                if dom is None:
                    continue
                c = dom.counters()
                values = vm_readings(c, self._vm_prev.get(uuid), mono)
                self._vm_prev[uuid] = (mono, tuple(c.cpu_seconds))
                for dev, (rd, wr) in c.vbd.items():
                    prev = self._vbd_prev.get((uuid, dev))
                    self._vbd_prev[(uuid, dev)] = (rd, wr)
                    sr = vbd_sr.get((uuid, dev))
                    if sr is None or prev is None:
                        continue
                    acc = sr_io.setdefault(sr, [0.0, 0.0])
                    acc[0] += max(0, rd - prev[0])
                    acc[1] += max(0, wr - prev[1])
            except Exception:  # noqa: BLE001 - one VM's failure leaves the others collected
                if uuid not in self._failing:
                    log.exception("statistics: collecting VM %s failed", uuid)
                    self._failing.add(uuid)
                continue
            self._failing.discard(uuid)
            readings[rid] = values
            vm_values[uuid] = values
        live_srs = set()
        for uuid in self._local_srs():
            rid = rrd_id(SR, uuid)
            live_srs.add(rid)
            if rid not in self.store and rid not in self._chains:
                self._chain(rid, self._load_or_create(rid, False))
            io = sr_io.get(uuid, [0.0, 0.0])
            readings[rid] = {"read": io[0], "write": io[1]}
        for rid in self.rrds.ids(SR):
            if rid not in live_srs and rid not in self._chains:
                self._chain(rid, self._destroy(rid))
        self.rrds.tick(t, readings)
        self.ticks += 1
        if self.ticks % 12 == 0:
            self.rrds.cache.expire(t, ring_reach)
        if self._warming is None or self._warming.done():
            self._warming = run_soon(self.warm(), self._jobs)
        self._legacy(t, host, vm_values)

    # -- keeping rrd_updates rows formatted --
    def asked(self, span: int, cfs: Iterable[str]) -> None:
        """An /rrd_updates poll read level ``span`` in ``cfs``: keep it warm for a while."""
        now = time.monotonic()
        for cf in cfs:
            self._demand[(span, cf)] = now

    async def warm(self) -> None:
        """Format the rows pollers will ask for, in a worker thread, right after a tick.

        Formatting is the cost of /rrd_updates (1.4 M values for 1,000 VMs' 5 s ring, ~0.6 s);
        done here, a poll only joins cached text. Cost: the text of each warm level (~30 MB
        for 1,000 VMs' 5 s level), kept only while its rows are in their ring."""
        now = time.monotonic()
        for key, asked in list(self._demand.items()):
            if now - asked > _DEMAND_TTL:
                del self._demand[key]
        shapes = [(LAYOUT.step, CF.AVERAGE.value)]
        shapes += [k for k in self._demand if k not in shapes]
        loop = asyncio.get_running_loop()
        for span, cf in shapes:
            for x, segments, plan in self.rrds.warm_work(self.store.rrd_ids(), span, cf):
                fresh = await loop.run_in_executor(self.executor, warm_rows, x, segments, plan)
                self.rrds.cache.keep(fresh)      # the loop is the cache's one writer

    def _vbd_srs(self) -> dict[tuple[str, str], str]:
        """(VM uuid, device) -> SR uuid, for the SR read/write sums."""
        st = self.db
        out = {}
        for rid in self.rrds.ids(VM):
            uuid = rid[3:]
            try:
                vm = st.get("VM", st.ref_of_uuid("VM", uuid))
            except Exception:  # noqa: BLE001 - destroyed meanwhile
                continue
            for vbd in vm["VBDs"]:
                b = st.find("VBD", vbd)
                if not b or b["VDI"] == NULL_REF or not st.find("VDI", b["VDI"]):
                    continue
                sr = st.find("SR", st.get("VDI", b["VDI"])["SR"])
                if sr is not None:
                    out[(uuid, _safe(b["device"] or b["userdevice"]))] = sr["uuid"]
        return out

    def _legacy(self, t: int, host: dict[str, float], vms: dict[str, dict[str, float]]) -> None:
        """host_metrics/VM_metrics from the same samples, when rrd_update_interval asks."""
        st = self.db
        hrec = st.get("host", self.host.host_ref)
        mode = hrec["other_config"].get("rrd_update_interval", "")
        every = {"1": 5, "2": 60}.get(mode)
        if every is None or t // every == self._last_legacy // every:
            return
        self._last_legacy = t
        now = _dt.datetime.now(_dt.timezone.utc)

        def num(v: float) -> int:
            return 0 if math.isnan(v) else int(v)

        with st.transaction():
            if st.find("host_metrics", hrec["metrics"]) is not None:
                st.update("host_metrics", hrec["metrics"], {
                    "memory_total": num(host["memory_total_kib"]) * 1024,
                    "memory_free": num(host["memory_free_kib"]) * 1024, "last_updated": now})
            for uuid, v in vms.items():
                try:
                    rec = st.get("VM", st.ref_of_uuid("VM", uuid))
                except Exception:  # noqa: BLE001
                    continue
                if st.find("VM_metrics", rec["metrics"]) is None:
                    continue
                util = {k[3:]: (0.0 if math.isnan(x) else x) for k, x in v.items()
                        if _CPU.match(k)}
                st.update("VM_metrics", rec["metrics"], {
                    "VCPUs_utilisation": util, "memory_actual": num(v["memory"]),
                    "last_updated": now})

    # -- lookups for the API and HTTP --
    def rid_of(self, cls: str, ref: str) -> str:
        rec = self.db.get(cls, ref)
        kind = {"host": HOST, "VM": VM, "SR": SR}[cls]
        return rrd_id(kind, rec["uuid"])
