"""Statistics benchmark: one 5 s tick of a host with 1,000 VMs, against rrdtool.

Run standalone: ``.venv/bin/python benchmarks/bench_rrd.py [--vms N] [--ticks N]``.
Measures (1) one tick of our store (every archive of every data source),
(2) ``rrdtool update`` of the same RRDs through rrdtool's pipe mode
(``rrdtool -``) on files in a temp dir, (3) rendering /rrd_updates for
start=now-600 with host=true and all VMs, (4) RAM of the store vs the
archive data itself.  Prints the machine description for RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rrd.engine import LAYOUT, LAYOUT_MIN_MAX, DataSource, DSType, RRDStore  # noqa: E402
from rrd.updates import xport_json, xport_xml  # noqa: E402

HOST_DS = ([f"cpu{i}" for i in range(8)] + ["cpu_avg", "loadavg", "memory_total_kib",
           "memory_free_kib", "pif_eth0_rx", "pif_eth0_tx", "pif_aggr_rx", "pif_aggr_tx",
           "xapi_memory_usage_kib", "xapi_open_fds", "pool_session_count", "pool_task_count"])
VM_DS = ["cpu0", "cpu1", "memory", "memory_target", "memory_internal_free", "vif_0_rx",
         "vif_0_tx", "vbd_xvda_read", "vbd_xvda_write", "vbd_xvdb_read", "vbd_xvdb_write",
         "vbd_xvda_iops_total"]
T0 = 1_700_000_000


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:10]
    rrdtool = subprocess.run(["rrdtool", "--version"], capture_output=True,
                             text=True).stdout.splitlines()[:1] if shutil.which("rrdtool") else []
    return "\n".join([f"nproc: {os.cpu_count()}", *lscpu, f"python {platform.python_version()}, "
                      f"numpy {np.__version__}", *rrdtool])


def build(n_vms: int) -> tuple[RRDStore, list[str], np.ndarray]:
    store = RRDStore()
    ids = ["host:00000000-host"] + [f"vm:{i:08d}-vm" for i in range(n_vms)]
    store.create(ids[0], T0, with_min_max=True)
    for n in HOST_DS:
        store.add_ds(ids[0], DataSource(n, DSType.GAUGE))
    for rid in ids[1:]:
        store.create(rid, T0)
        for n in VM_DS:
            store.add_ds(rid, DataSource(n, DSType.GAUGE))
    cols = np.concatenate([store.columns(r) for r in ids])
    return store, ids, cols


def bench_ticks(store: RRDStore, cols: np.ndarray, ticks: int) -> list[float]:
    rng = np.random.default_rng(1)
    samples = rng.random((ticks + 240, len(cols))) * 1e6
    times = []
    for k in range(ticks + 240):  # the first 240 ticks fill the 5 s ring (render needs it)
        t = T0 + 5 * (k + 1)
        start = time.perf_counter()
        store.tick(t, cols, samples[k])
        if k >= 240:
            times.append(time.perf_counter() - start)
    return times


def bench_rrdtool(ids: list[str], ticks: int, tmp: Path) -> float:
    """Seconds per tick for rrdtool pipe mode updating every file once."""
    proc = subprocess.Popen(["rrdtool", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1 << 20)

    def run(lines: list[str]) -> None:
        proc.stdin.write("".join(lines))
        proc.stdin.flush()
        for _ in lines:
            out = proc.stdout.readline()
            if not out.startswith("OK"):
                raise RuntimeError(f"rrdtool: {out.strip()}")

    def rras(layout) -> str:
        return " ".join(f"RRA:{a.cf.value}:{min(a.xff, 0.999)}:{a.pdp_per_row}:{a.rows}"
                        for a in layout.archives)

    creates = []
    for i, rid in enumerate(ids):
        names, layout = (HOST_DS, LAYOUT_MIN_MAX) if i == 0 else (VM_DS, LAYOUT)
        dss = " ".join(f"DS:{n[:19]}:GAUGE:300:U:U" for n in names)
        creates.append(f"create {tmp}/{i}.rrd --start {T0} --step 5 {dss} {rras(layout)}\n")
    for i in range(0, len(creates), 200):
        run(creates[i:i + 200])
    rng = np.random.default_rng(2)
    per_tick = []
    for k in range(ticks + 2):
        t = T0 + 5 * (k + 1)
        lines = []
        for i in range(len(ids)):
            n = len(HOST_DS) if i == 0 else len(VM_DS)
            vals = ":".join(f"{v:.6f}" for v in rng.random(n) * 1e6)
            lines.append(f"update {tmp}/{i}.rrd {t}:{vals}\n")
        start = time.perf_counter()
        run(lines)
        if k >= 2:  # the first updates fault the files into the page cache
            per_tick.append(time.perf_counter() - start)
    proc.stdin.close()
    proc.wait()
    return statistics.median(per_tick)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--rrdtool-ticks", type=int, default=12)
    args = ap.parse_args()

    print("## machine\n" + machine())
    store, ids, cols = build(args.vms)
    n_values = len(cols)
    times = bench_ticks(store, cols, args.ticks)
    tick = statistics.median(times)
    ours_rate = n_values / tick
    print(f"\ndata sources: {n_values} ({args.vms} VMs x {len(VM_DS)} + host {len(HOST_DS)})")
    print(f"our tick: median {tick * 1e3:.3f} ms, p90 {np.percentile(times, 90) * 1e3:.3f} ms"
          f" -> {ours_rate:,.0f} DS values/s")

    if shutil.which("rrdtool"):
        with tempfile.TemporaryDirectory() as tmp:
            rt = bench_rrdtool(ids, args.rrdtool_ticks, Path(tmp))
            size = (Path(tmp) / "1.rrd").stat().st_size
        rt_rate = n_values / rt
        print(f"rrdtool pipe mode: {rt * 1e3:.1f} ms per tick -> {rt_rate:,.0f} DS values/s "
              f"(VM file {size:,} bytes)")
        print(f"ratio ours/rrdtool: {ours_rate / rt_rate:.1f}x")
    else:
        print("rrdtool not installed: comparison skipped")

    now = store.last_update(ids[0])
    for name, render in (("xml", xport_xml), ("json", xport_json)):
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            x = store.xport(ids, start=now - 600)
            gathered = time.perf_counter() - start
            size = sum(len(c) for c in render(x))
            runs.append((time.perf_counter() - start, gathered, size))
        total, gathered, size = min(runs)
        print(f"rrd_updates {name} start=now-600 host=true all VMs: {total * 1e3:.0f} ms "
              f"(archive gather {gathered * 1e3:.1f} ms), {size / 1e6:.1f} MB, "
              f"{x.values.shape[0]} rows x {x.values.shape[1]} columns")

    archive = (len(HOST_DS) * sum(a.rows for a in LAYOUT_MIN_MAX.archives)
               + args.vms * len(VM_DS) * sum(a.rows for a in LAYOUT.archives)) * 8
    used, capacity = store.columns_in_use()
    print(f"RAM: store arrays {store.nbytes() / 2**20:.1f} MiB allocated for {capacity} columns "
          f"({used} in use) vs archive data {archive / 2**20:.1f} MiB "
          f"({store.nbytes() / archive:.2f}x allocated, "
          f"{store.nbytes() * used / capacity / archive:.2f}x per column in use; "
          f"{sum(a.rows for a in LAYOUT.archives)} doubles per VM DS)")

if __name__ == "__main__":
    main()
