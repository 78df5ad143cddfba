"""The data sources of this host, its VMs and SRs, and the readings that feed them: pure
functions turning what the machine (``/proc``) and the domain backend (``DomainCounters``) say
into ``{data source name: value}``.

RRD ids: ``host:<uuid>``, ``vm:<uuid>`` (the control domain included), ``sr:<uuid>``."""

from __future__ import annotations

import logging
import math
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

from rrd.engine import DataSource, DSType

from ..backends.base import DomainCounters
from ..model.errors import XenAPIError

__all__ = ["HOST", "VM", "SR", "rrd_id", "host_ds", "vm_ds", "sr_ds", "DEFINITIONS", "ProcReader",
           "vm_readings", "dom0_readings", "invalid_data_source"]

log = logging.getLogger(__name__)

NAN = math.nan
INF = math.inf
HOST, VM, SR = "host", "vm", "sr"
_BAD_NAME = re.compile(r"[^A-Za-z0-9_.\-]")


def rrd_id(kind: str, uuid: str) -> str:
    return f"{kind}:{uuid}"


# --- data source definitions (one place; metadata is what get_data_sources shows) ----------

def _gauge(name: str, units: str, desc: str, lo: float = 0.0, hi: float = NAN) -> DataSource:
    return DataSource(name, DSType.GAUGE, lo, hi, units, desc)


def _derive(name: str, units: str, desc: str) -> DataSource:
    return DataSource(name, DSType.DERIVE, 0.0, NAN, units, desc)


_HOST_FIXED = {d.name: d for d in (
    _gauge("cpu_avg", "(fraction)", "Average physical CPU usage", 0.0, 1.0),
    _gauge("loadavg", "(fraction)", "Domain0 loadavg"),
    _gauge("memory_total_kib", "KiB", "Total amount of memory"),
    _gauge("memory_free_kib", "KiB", "Free memory (MemFree)"),
    _gauge("xapi_memory_usage_kib", "KiB", "Memory used by the agent (RSS)"),
    _gauge("xapi_open_fds", "count", "Open file descriptors of the agent"),
    _gauge("pool_session_count", "count", "Sessions open on this host"),
    _gauge("pool_task_count", "count", "Tasks on this host"),
    _derive("pif_aggr_rx", "B/s", "Bytes per second received on all physical interfaces"),
    _derive("pif_aggr_tx", "B/s", "Bytes per second sent on all physical interfaces"),
)}
_VM_FIXED = {d.name: d for d in (
    _gauge("memory", "B", "Memory currently allocated to the VM"),
    _gauge("memory_target", "B", "Target of the VM's balloon driver"),
    _gauge("memory_internal_free", "KiB", "Memory free as the guest reports it"),
)}
_SR_FIXED = {d.name: d for d in (
    DataSource("read", DSType.ABSOLUTE, 0.0, NAN, "B/s", "Bytes per second read from the SR"),
    DataSource("write", DSType.ABSOLUTE, 0.0, NAN, "B/s", "Bytes per second written to the SR"),
)}
_CPU = re.compile(r"cpu(\d+)\Z")
_PIF = re.compile(r"pif_(.+)_(rx|tx)\Z")
_VIF = re.compile(r"vif_(.+)_(rx|tx)\Z")
_VBD = re.compile(r"vbd_(.+)_(read|write)\Z")


@lru_cache(maxsize=4096)
def host_ds(name: str) -> DataSource | None:
    """The definition of a host data source by name (None: not one of ours)."""
    if name in _HOST_FIXED:
        return _HOST_FIXED[name]
    if m := _CPU.match(name):
        return _gauge(name, "(fraction)", f"Physical CPU {m[1]} usage", 0.0, 1.0)
    if m := _PIF.match(name):
        way = "received on" if m[2] == "rx" else "sent on"
        return _derive(name, "B/s", f"Bytes per second {way} physical interface {m[1]}")
    return None


@lru_cache(maxsize=4096)
def vm_ds(name: str) -> DataSource | None:
    if name in _VM_FIXED:
        return _VM_FIXED[name]
    if m := _CPU.match(name):
        return _gauge(name, "(fraction)", f"CPU{m[1]} usage", 0.0, 1.0)
    if m := _VIF.match(name):
        way = "received on" if m[2] == "rx" else "sent on"
        return _derive(name, "B/s", f"Bytes per second {way} virtual interface {m[1]}")
    if m := _VBD.match(name):
        return _derive(name, "B/s", f"Bytes per second {m[2]} on device {m[1]}")
    return None


def sr_ds(name: str) -> DataSource | None:
    return _SR_FIXED.get(name)


DEFINITIONS: dict[str, Callable[[str], DataSource | None]] = {HOST: host_ds, VM: vm_ds, SR: sr_ds}


def _safe(dev: str) -> str:
    return _BAD_NAME.sub("_", dev)


# --- readings --------------------------------------------------------------------------------

class ProcReader:
    """The host's readings from ``/proc``; CPU fractions from the previous sample's jiffies."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = Path(proc)
        self._jiffies: list[tuple[int, int]] | None = None   # (busy, total) per CPU, then all

    def _text(self, name: str) -> str:
        return (self.proc / name).read_text()

    def cpu_fractions(self) -> list[float]:
        """[cpu0, cpu1, ..., cpu_avg] as busy/total jiffies since the last call (NaN first)."""
        per: list[tuple[int, int]] = []
        total_line: tuple[int, int] | None = None
        for line in self._text("stat").splitlines():
            if not line.startswith("cpu"):
                continue
            name, *fields = line.split()
            v = [int(x) for x in fields[:8]]            # user nice system idle iowait irq soft steal
            busy_total = (sum(v) - v[3] - v[4], sum(v))
            if name == "cpu":
                total_line = busy_total
            else:
                per.append(busy_total)
        now = per + [total_line or (0, 0)]
        prev, self._jiffies = self._jiffies, now
        if prev is None or len(prev) != len(now):
            return [NAN] * len(now)
        out = []
        for (b0, t0), (b1, t1) in zip(prev, now):
            dt = t1 - t0
            out.append(min(1.0, max(0.0, (b1 - b0) / dt)) if dt > 0 else NAN)
        return out

    def meminfo(self) -> dict[str, int]:
        out = {}
        for line in self._text("meminfo").splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
        return out

    def uptime(self) -> float:
        """Seconds since the host booted."""
        return float(self._text("uptime").split()[0])

    def net_dev(self) -> dict[str, tuple[int, int]]:
        out = {}
        for line in self._text("net/dev").splitlines()[2:]:
            name, _, rest = line.partition(":")
            f = rest.split()
            if len(f) >= 9:
                out[name.strip()] = (int(f[0]), int(f[8]))
        return out

    def own(self) -> tuple[int, int]:
        """(RSS KiB, open fds) of this process."""
        rss = 0
        for line in self._text("self/status").splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
        return rss, len(os.listdir(self.proc / "self" / "fd"))

    def readings(self, pifs: Iterable[str] | None = None) -> dict[str, float]:
        """Every host data source's value (DERIVE ones as raw counters). Blocking: run in an
        executor. ``pifs``: interface names to report (default: every one but ``lo``)."""
        r: dict[str, float] = {}
        cpus = self.cpu_fractions()
        for i, f in enumerate(cpus[:-1]):
            r[f"cpu{i}"] = f
        r["cpu_avg"] = cpus[-1]
        r["loadavg"] = float(self._text("loadavg").split()[0])
        mem = self.meminfo()
        r["memory_total_kib"] = float(mem.get("MemTotal", NAN))
        r["memory_free_kib"] = float(mem.get("MemFree", NAN))
        net = self.net_dev()
        wanted = [d for d in (pifs or ()) if d in net] or [d for d in net if d != "lo"]
        rx = tx = 0
        for dev in wanted:
            r[f"pif_{_safe(dev)}_rx"], r[f"pif_{_safe(dev)}_tx"] = net[dev]
            rx += net[dev][0]
            tx += net[dev][1]
        r["pif_aggr_rx"], r["pif_aggr_tx"] = float(rx), float(tx)
        rss, fds = self.own()
        r["xapi_memory_usage_kib"] = float(rss)
        r["xapi_open_fds"] = float(fds)
        return r


def vm_readings(c: DomainCounters, prev: tuple[float, tuple[float, ...]] | None,
                now: float) -> dict[str, float]:
    """A running VM's values from its domain counters; ``prev`` is (time, cpu_seconds) of the
    previous sample (CPU fractions need two samples)."""
    r: dict[str, float] = {}
    for i, secs in enumerate(c.cpu_seconds):
        frac = NAN
        if prev is not None and len(prev[1]) == len(c.cpu_seconds) and now > prev[0]:
            d = secs - prev[1][i]
            if d >= 0:
                frac = min(1.0, d / (now - prev[0]))
        r[f"cpu{i}"] = frac
    r["memory"] = float(c.memory)
    r["memory_target"] = float(c.memory_target)
    r["memory_internal_free"] = float(c.memory_internal_free)
    for dev, (rx, tx) in c.vif.items():
        r[f"vif_{_safe(dev)}_rx"] = float(rx)
        r[f"vif_{_safe(dev)}_tx"] = float(tx)
    for dev, (rd, wr) in c.vbd.items():
        r[f"vbd_{_safe(dev)}_read"] = float(rd)
        r[f"vbd_{_safe(dev)}_write"] = float(wr)
    return r


def dom0_readings(host: dict[str, float]) -> dict[str, float]:
    """The control domain is this machine: its vCPUs are the host's CPUs."""
    r = {k: v for k, v in host.items() if _CPU.match(k)}
    total, free = host.get("memory_total_kib", NAN), host.get("memory_free_kib", NAN)
    r["memory"] = r["memory_target"] = (total - free) * 1024
    r["memory_internal_free"] = free
    return r


# --- a cache of formatted archive rows (rrd_updates) ------------------------------------------


def invalid_data_source(name: str) -> XenAPIError:
    """xapi's answer for an unknown data source name."""
    return XenAPIError("INTERNAL_ERROR", f'Rrd.Invalid_data_source("{name}")')
