"""/rrd_updates over HTTP with 1,000 VM RRDs: time and size, cold and warm row cache.

The real application (build_app) runs in this process on a loopback port; after start-up its
statistics service gets 1,000 VM RRDs filled through the collector's own path (vm_readings from
domain counters -> RRDSet.tick, one tick for every RRD) for 130 ticks (the 5 s archive full),
then curl fetches `/rrd_updates?start=<now-600>&host=true` (XML and JSON):

* cold: a request with an empty row cache formats every value (what a poll arriving while the
  service's warm-up still runs would pay);
* warm-up: what the service does in a worker thread after each tick (StatsService.warm):
  format the rows not cached yet — after start every row of the 5 s ring, then one per tick;
* warm: the request after warm-up (every row cached);
* after a tick (+ its warm-up, timed apart): what a poller sees in steady state;
* the plain library renderer (rrd.updates.xport_xml) on the same rows, for comparison.

Usage: python benchmarks/bench_stats_http.py [--vms 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402

from httpd.app import build_app  # noqa: E402
from httpd.config import Config  # noqa: E402
from httpd.backends.base import DomainCounters  # noqa: E402
from httpd.stats.sources import VM, rrd_id, vm_readings  # noqa: E402
from httpd.web.appkeys import SERVICES  # noqa: E402
from rrd.updates import xport_xml  # noqa: E402

PASSWORD = "bench"


def _counters(i: int, k: int) -> DomainCounters:
    """Counters of VM i after k ticks: 2 vCPUs, 2 VIFs, 2 VBDs (12 data sources)."""
    return DomainCounters(
        cpu_seconds=(k * 5 * 0.013 * (1 + i % 7), k * 5 * 0.002 * (1 + i % 3)),
        memory=2**28 + i * 2**20, memory_target=2**28 + i * 2**20,
        memory_internal_free=100_000 + (i * 7919 + k * 13) % 50_000,
        vif={"0": (k * 5 * (100 + i), k * 5 * (60 + i % 50)), "1": (k * 5 * 3, k * 5 * 2)},
        vbd={"xvda": (k * 5 * 65536, k * 5 * (i % 11) * 512), "xvdb": (k * 5 * 4096, 0)})


def populate(service, n_vms: int, end: int, ticks: int) -> float:
    rrds = service.rrds
    t0 = end - 5 * ticks
    uuids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(n_vms)]
    for u in uuids:
        rrds.create(rrd_id(VM, u), t0, False)
    host_rid = service.host_rid
    host_values = {"cpu0": 0.25, "cpu1": 0.5, "cpu_avg": 0.375, "loadavg": 0.6,
                   "memory_total_kib": 16e6, "memory_free_kib": 9e6}
    prev: dict[str, tuple[float, tuple[float, ...]]] = {}
    started = time.perf_counter()
    for k in range(1, ticks + 1):
        t = t0 + 5 * k
        readings = {host_rid: host_values}
        for i, u in enumerate(uuids):
            c = _counters(i, k)
            readings[rrd_id(VM, u)] = vm_readings(c, prev.get(u), float(t))
            prev[u] = (float(t), c.cpu_seconds)
        rrds.tick(t, readings)
    return (time.perf_counter() - started) / ticks


def curl(url: str, basic: bool) -> tuple[float, float, int]:
    """(seconds to first byte, total seconds, bytes)."""
    auth = ["-u", f"root:{PASSWORD}"] if basic else []
    out = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *auth, "-w",
                          "%{time_starttransfer} %{time_total} %{size_download}", url],
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1]), int(out[2])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    os.environ["XCP_ROOT_PASSWORD"] = PASSWORD
    with tempfile.TemporaryDirectory() as tmp:
        config = Config(data_dir=Path(tmp), listen=("127.0.0.1:0",), demo=False,
                        stats_interval=3600, stats_save_interval=10**9, login_fail_delay=0.0)
        app = build_app(config)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        service = app[SERVICES].stats
        end = (int(time.time()) // 5 + 1) * 5     # not behind the RRDs made at start-up
        per_tick = populate(service, args.vms, end, 130)
        ds = sum(len(service.store.data_sources(r)) for r in service.store.rrd_ids())
        print(f"{args.vms} VM RRDs + host + dom0 + SR, {ds} data sources; "
              f"populating: {per_tick * 1e3:.1f} ms per tick (readings + RRDSet.tick)")
        loop = asyncio.get_running_loop()

        session = app[SERVICES].sessions.open_session("root", "bench")

        async def fetch(query: str, basic: bool = False) -> tuple[float, float, int]:
            """Xen Orchestra's way (session_id in the query), or Basic auth (a login each)."""
            sid = "" if basic else f"&session_id={session}"
            return await loop.run_in_executor(
                None, curl, f"http://127.0.0.1:{port}/rrd_updates?{query}{sid}", basic)

        for fmt, extra in (("XML", ""), ("JSON", "&json=true")):
            service.rrds.cache = type(service.rrds.cache)()          # cold
            q = f"start={end - 600}&host=true{extra}"
            ttfb, total, size = await fetch(q)
            print(f"{fmt} cold : {total * 1e3:7.0f} ms (first byte {ttfb * 1e3:.0f} ms), "
                  f"{size / 1e6:.1f} MB")
            service.rrds.cache = type(service.rrds.cache)()          # as after a start
            started = time.perf_counter()
            await service.warm()
            print(f"{fmt} warm-up after start (worker thread): "
                  f"{(time.perf_counter() - started) * 1e3:7.0f} ms")
            ttfb, total, size = await fetch(q)
            print(f"{fmt} first poll after warm-up: {total * 1e3:7.0f} ms "
                  f"(first byte {ttfb * 1e3:.0f} ms)")
            warm = [await fetch(q) for _ in range(args.repeat)]
            print(f"{fmt} warm : {statistics.median(w[1] for w in warm) * 1e3:7.0f} ms median "
                  f"(first byte {statistics.median(w[0] for w in warm) * 1e3:.0f} ms), "
                  f"{warm[0][2] / 1e6:.1f} MB")
            basic = [await fetch(q, basic=True) for _ in range(args.repeat)]
            print(f"{fmt} warm, Basic auth (scrypt once, then remembered): "
                  f"{statistics.median(w[1] for w in basic) * 1e3:7.0f} ms median")
            after, warmups = [], []
            for _ in range(args.repeat):
                end += 5
                readings = {service.host_rid: {"cpu0": 0.3}}
                readings.update({r: {"memory": 2.0**28} for r in service.rrds.ids(VM)})
                service.rrds.tick(end, readings)
                started = time.perf_counter()
                await service.warm()                  # what the collector runs after a tick
                warmups.append(time.perf_counter() - started)
                after.append(await fetch(f"start={end - 600}&host=true{extra}"))
            print(f"{fmt} after one tick: {statistics.median(a[1] for a in after) * 1e3:7.0f} ms "
                  f"median, {after[0][2] / 1e6:.1f} MB; its warm-up "
                  f"{statistics.median(warmups) * 1e3:.0f} ms median (worker thread)")
        rids = [service.host_rid] + service.rrds.ids(VM)
        started = time.perf_counter()
        x = service.store.xport(rids, end - 600)
        gathered = time.perf_counter()
        size = sum(len(c) for c in xport_xml(x))
        done = time.perf_counter()
        print(f"library renderer (no cache, in-process): gather {(gathered - started) * 1e3:.0f} ms"
              f" + xport_xml {(done - gathered) * 1e3:.0f} ms, {size / 1e6:.1f} MB")
        print(f"row cache: {service.rrds.cache.nbytes() / 2**20:.1f} MiB of text; "
              f"store arrays {service.store.nbytes() / 2**20:.1f} MiB")
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
