"""A 3-host pool on PostgreSQL next to a lone host on SQLite (issue 17).

    .venv/bin/python benchmarks/bench_pool.py [--vms 10000] [--calls 2000]

Starts, one after the other (`--backend simulated --no-demo`): a lone agent on its SQLite file
(the default), a lone agent on a PostgreSQL 15 cluster this script initdb's in a temp dir
(fsync on, as a production server), and a pool of three agents on that cluster (127.0.0.1-3,
hosts 2 and 3 joined with pool.join), each with --vms VMs made through it (the pool: through
its master), and measures in the same run, on the master for the pool:

  get_record     VM.get_record calls/s, one XML-RPC client (the SDK), --calls calls
  get_all        VM.get_all_records with --vms VMs: seconds, median of 5
  event          a change (VM.set_name_label) to the event.from that sees it: p50 / p95 ms
  write          VM.set_name_label calls/s, one client (each waits for its commit)
  cross_event    the pool only: a change made on host 3 (in a pool session, as the internal
                 RPC makes them) to the master's event.from that sees it: p50 / p95 ms
  follow         a change committed by one store to another store's cache on the same
                 PostgreSQL database (the path under cross_event), p50 / p95 ms

Goal (issue 17): the pool keeps >= 0.7x the lone host's calls/s, p50 event latency < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import XenAPI  # noqa: E402

from httpd.model.engines import engine_for  # noqa: E402
from httpd.model.events import EventHub  # noqa: E402
from httpd.model.store import Store  # noqa: E402
from tests.pool.agents import Pool  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402
from tests.server import Server  # noqa: E402


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round((len(s) - 1) * p / 100)))]


def session(srv: Server):
    s = XenAPI.Session(srv.url)
    s.xenapi.login_with_password("root", srv.password, "2.21", "bench_pool")
    return s


def populate(srv: Server, n: int) -> list[str]:
    def some(k: int) -> list[str]:
        x = session(srv).xenapi
        return [x.VM.create({"name_label": f"vm{k}-{i}", "memory_static_max": str(2**28)})
                for i in range(n // 4)]
    with ThreadPoolExecutor(4) as pool:
        return [r for part in pool.map(some, range(4)) for r in part]


def measure(srv: Server, vms: list[str], calls: int) -> dict[str, float]:
    x = session(srv).xenapi
    t = time.perf_counter()
    for i in range(calls):
        x.VM.get_record(vms[i % len(vms)])
    out = {"get_record": calls / (time.perf_counter() - t)}
    times = []
    for _ in range(5):
        t = time.perf_counter()
        assert len(x.VM.get_all_records()) >= len(vms)
        times.append(time.perf_counter() - t)
    out["get_all"] = statistics.median(times)
    t = time.perf_counter()
    for i in range(calls // 4):
        x.VM.set_name_label(vms[0], f"w{i}")
    out["write"] = (calls // 4) / (time.perf_counter() - t)
    # event latency: a waiter in event.from, a writer that stamps its send time
    waiter = session(srv).xenapi
    token = waiter.event_from(["vm"], "", 0.0)["token"]
    lat = []
    for i in range(100):
        sent = {}

        def write(i=i) -> None:
            time.sleep(0.005)
            sent["t"] = time.perf_counter()
            x.VM.set_name_label(vms[1], f"e{i}")
        th = threading.Thread(target=write)
        th.start()
        while True:
            got = waiter.event_from(["vm"], token, 5.0)
            token = got["token"]
            if any(e["ref"] == vms[1] and e["snapshot"]["name_label"] == f"e{i}"
                   for e in got["events"]):
                break
        lat.append((time.perf_counter() - sent["t"]) * 1000)
        th.join()
    out["event_p50"], out["event_p95"] = pct(lat, 50), pct(lat, 95)
    return out


def cross_event(pool: Pool, vm: str, rounds: int = 100) -> tuple[float, float]:
    """Host 3's agent changes `vm` (a pool session); the master's event.from sees it."""
    x = pool.login(0).xenapi
    host3 = next(h for h in x.host.get_all() if x.host.get_address(h) == "127.0.0.3")
    secret = (pool.hosts[2].data_dir / "pool.secret").read_text().strip()
    agent3 = xmlrpc.client.ServerProxy(pool.url(2))
    sid = agent3.session.slave_login(host3, secret)["Value"]
    token = x.event_from(["vm"], "", 0.0)["token"]
    lat = []
    for i in range(rounds):
        sent = {}

        def write(i=i) -> None:
            time.sleep(0.005)
            sent["t"] = time.perf_counter()
            agent3.VM.set_name_label(sid, vm, f"c{i}")
        th = threading.Thread(target=write)
        th.start()
        while True:
            got = x.event_from(["vm"], token, 5.0)
            token = got["token"]
            if any(e["ref"] == vm and e["snapshot"]["name_label"] == f"c{i}"
                   for e in got["events"]):
                break
        lat.append((time.perf_counter() - sent["t"]) * 1000)
        th.join()
    return pct(lat, 50), pct(lat, 95)


def run_pool(work: Path, url: str, n: int, calls: int) -> dict[str, float]:
    pool = Pool(work / "pool", url, "--no-demo")
    try:
        for srv in pool.hosts:
            srv.start(timeout=120)
        pool.join()
        master = pool.hosts[0]
        t = time.perf_counter()
        vms = populate(master, n)
        out = {"create": len(vms) / (time.perf_counter() - t), **measure(master, vms, calls)}
        out["cross_event_p50"], out["cross_event_p95"] = cross_event(pool, vms[2])
        return out
    finally:
        for srv in pool.hosts:
            srv.stop()


async def follow_latency(url: str, rounds: int = 200) -> tuple[float, float]:
    a = Store(engine_for(url, ""), EventHub())
    b = Store(engine_for(url, ""), EventHub())
    a.open()
    b.open()
    try:
        vm = a.create("VM", {"name_label": "f"})
        await a.sync()
        lat = []
        for i in range(rounds):
            t = time.perf_counter()
            a.update("VM", vm, {"name_label": f"f{i}"})
            while b.find("VM", vm) is None or b.get("VM", vm)["name_label"] != f"f{i}":
                await asyncio.sleep(0.0005)
            lat.append((time.perf_counter() - t) * 1000)
        return pct(lat, 50), pct(lat, 95)
    finally:
        await a.close()
        await b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    cluster = PostgresCluster(durable=True).start()
    work = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    results = {}
    try:
        url = cluster.new_database()
        for name, extra in (("sqlite", ()), ("postgresql", ("--database", url))):
            srv = Server(work / name, "--no-demo", *extra).start(timeout=120)
            try:
                t = time.perf_counter()
                vms = populate(srv, args.vms)
                made = time.perf_counter() - t
                results[name] = {"create": len(vms) / made, **measure(srv, vms, args.calls)}
                t = time.perf_counter()
                srv.restart()
                results[name]["restart"] = time.perf_counter() - t
            finally:
                srv.stop()
        results["pool"] = run_pool(work, cluster.new_database(), args.vms, args.calls)
        f50, f95 = asyncio.run(follow_latency(cluster.new_database()))
    finally:
        cluster.stop()
    s, p, q = results["sqlite"], results["postgresql"], results["pool"]
    print(f"{args.vms} VMs, {args.calls} calls; PostgreSQL 15 fsync on, SQLite WAL FULL")
    print(f"{'':24}{'sqlite':>10}{'postgresql':>12}{'pg/sqlite':>11}{'3-host pool':>13}"
          f"{'pool/sqlite':>13}")
    for key, unit in (("create", "calls/s"), ("get_record", "calls/s"), ("write", "calls/s"),
                      ("get_all", "s"), ("event_p50", "ms"), ("event_p95", "ms"),
                      ("restart", "s"), ("cross_event_p50", "ms"), ("cross_event_p95", "ms")):
        def cell(r: dict, width: int) -> str:
            return f"{r[key]:{width}.2f}" if key in r else f"{'-':>{width}}"

        def ratio(r: dict, width: int) -> str:
            return f"{r[key] / s[key]:{width - 1}.2f}x" if key in r and key in s else \
                f"{'-':>{width}}"
        print(f"{key + ' (' + unit + ')':24}{cell(s, 10)}{cell(p, 12)}{ratio(p, 11)}"
              f"{cell(q, 13)}{ratio(q, 13)}")
    print(f"follow (ms, store to store on one PostgreSQL database): p50 {f50:.1f}  "
          f"p95 {f95:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
