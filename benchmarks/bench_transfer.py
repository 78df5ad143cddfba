"""VM export/import over HTTP (curl against the real daemon) next to pigz/gzip anchors.

    .venv/bin/python benchmarks/bench_transfer.py [--size-gib 1] [--big-gib 16] [--repeat 3]
                                                  [--dense-gib 1] [--xe-gib 3] [--only-dense]
                                                  [--big-anchors] [--dir DIR]

Starts `xcp-httpd serve` in a temp dir (tests.server.Server), creates a halted VM whose VDI is
a sparse disk of --size-gib holding 128 MiB of realistic data (32 MiB binaries, 64 MiB text,
32 MiB random, scattered in 4 MiB extents; built as benchmarks/bench_xva.py does), then in one
run, side by side on that very image file:

  anchors   pigz -p 2 -6 -c disk > /dev/null, gzip -6 -c disk > /dev/null,
            pigz -dc disk.gz | dd of=out bs=1M conv=sparse (disk.gz made first, not timed)
  ours      curl -o /dev/null .../export?uuid=..&format=appliance     (appliance layout)
            curl -o /dev/null .../export?uuid=..&format=xapi&use_compression=true
            curl -T file .../import?sr_uuid=..  for a file of each layout; the imported VDI is
            compared with cmp and its st_blocks with the source's

Then dense disks (--dense-gib, 1 GiB each: one of random data, one mixed: 1/4 binaries, 3/8
text, 1/4 random, 1/8 written zeros), each in every layout, repeated --repeat times with the
anchors in the same round (the page cache warmed before each command):

  anchors   cat disk > /dev/null; python -m isal.igzip -1 (one isal thread); zstd -3 -T1;
            pigz -p 2 -1 (once); dd if=disk of=<SR dir> bs=1M conv=fsync (the write floor;
            also with oflag=direct bs=4M, the way the agent writes imports, shown alone);
            http: busybox httpd (C, sendfile) sending our xapi export's bytes to curl
            -o /dev/null (the floor of any HTTP export here)
  ours      curl -o /dev/null and xe vm-export filename=/dev/null for: appliance,
            xapi (no compression), xapi+gzip, xapi+zstd; curl -T and xe vm-import of each
            (the imported disk compared with cmp, then destroyed)
  ratios    gzip layouts / one isal thread, zstd / zstd -3 -T1, xapi / http, imports / dd,
            xe / curl (xe's own start and login, timed with xe vm-list, included)

Then xe against curl on a --xe-gib random disk (3 GiB: the size of the issue's own report),
xapi and xapi+gzip, export to /dev/null and import, in turn: where a transfer takes seconds,
xe's ~0.1 s start no longer decides the ratio, and what is left is the two copy loops.

Every removed file (dd's output, each imported disk) is followed by a sync, so that less of
what the file system does for the removal (ext4 here is mounted with `discard`) lands in the
next measurement (xe's start and login took 0.20 s in the bench just after dd, 0.12 s on a
quiet machine; after a 1 GiB dd and removal, 0.16-0.24 s without the sync, 0.15-0.19 s with
it). The login itself is not what slows: it took 1.8 ms during a 3 GB dd, as on a quiet
machine; what is left is xe's own start (not timed apart after dd).

Peak server RSS growth is sampled from /proc/<pid>/status (VmRSS) every 20 ms in a thread;
server CPU (utime+stime, all threads) comes from /proc/<pid>/stat.  Then the same data in a
--big-gib virtual disk (anchors there only with --big-anchors: they take minutes), to show
the cost follows the data, not the virtual size.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_vhd import static_server  # noqa: E402
from bench_xva import build_disk, harvest  # noqa: E402
from tests.server import Server  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")


# --- measuring ------------------------------------------------------------------------------
class RSSSampler:
    """Peak VmRSS of a process, sampled every ``interval`` s in a thread, against a baseline
    taken when the sampler starts."""

    def __init__(self, pid: int, base_kib: int | None = None, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = rss_kib(pid)
        self.base = self.peak if base_kib is None else base_kib
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "RSSSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_kib(self.pid))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """utime + stime of every thread of ``pid``, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sh(cmd: str) -> float:
    """Wall time of a shell pipeline (raises if it fails)."""
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


class Measure:
    """Wall time, server CPU and peak server RSS growth of one server-side operation.

    RSS growth is counted from the idle server's RSS (``base_kib``, taken once before any
    transfer), not from the RSS just before the operation: memory that an earlier transfer
    left in the allocator's free lists would otherwise hide what a transfer really needs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base_kib = rss_kib(pid)

    def __call__(self, cmd: list[str]) -> dict:
        cpu0 = cpu_s(self.pid)
        with RSSSampler(self.pid, self.base_kib) as rss:
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, check=True)
            wall = time.perf_counter() - t
        return {"t": wall, "cpu": cpu_s(self.pid) - cpu0, "rss": rss.growth_mib,
                "out": r.stdout}


# --- the server side ------------------------------------------------------------------------
class Bench:
    def __init__(self, server: Server, work: str) -> None:
        self.srv, self.work = server, work
        self.x = server.session().xenapi
        self.sr = self.x.pool.get_default_SR(self.x.pool.get_all()[0])
        self.sr_uuid = self.x.SR.get_uuid(self.sr)
        self.base = server.url.replace("http://", f"http://root:{server.password}@")
        self.measure = Measure(server.proc.pid)

    def disk_path(self, vdi: str) -> str:
        pbd = self.x.SR.get_PBDs(self.x.VDI.get_SR(vdi))[0]
        return os.path.join(self.x.PBD.get_device_config(pbd)["path"],
                            self.x.VDI.get_location(vdi) + ".raw")

    def make_vm(self, size: int, data: bytes) -> tuple[str, str]:
        """A halted VM with one VDI of ``size`` holding ``data``; returns (vm uuid, disk path)."""
        x = self.x
        vm = x.VM.create({"name_label": f"bench-{size >> 30}g", "name_description": "bench",
                          "memory_static_max": str(2**28), "VCPUs_max": "1"})
        vdi = x.VDI.create({"SR": self.sr, "virtual_size": str(size), "type": "system",
                            "name_label": "root"})
        path = self.disk_path(vdi)
        build_disk(path, size, data)
        x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW", "type": "Disk",
                      "bootable": True})
        os.sync()
        return x.VM.get_uuid(vm), path

    def export(self, uuid: str, query: str, out: str = "/dev/null") -> dict:
        return self.measure(["curl", "-sS", "-f", "-o", out,
                             f"{self.base}/export?uuid={uuid}{query}"])

    def import_(self, xva: str) -> dict:
        r = self.measure(["curl", "-sS", "-f", "-T", xva,
                          f"{self.base}/import?sr_uuid={self.sr_uuid}"])
        r["vm"] = r.pop("out").decode().split()[0]
        return r

    def xe(self) -> list[str]:
        """The xe command line, logged in to this server."""
        port = self.srv.url.rsplit(":", 1)[1]
        return [str(HERE.parent / ".venv" / "bin" / "xe"), "-s", "127.0.0.1", "-p", port,
                "--nossl", "-u", "root", "-pw", self.srv.password]

    def xe_export(self, uuid: str, xe_arg: str) -> float:
        """Wall time of ``xe vm-export`` to /dev/null (``xe_arg``: its layout argument)."""
        return self.measure(self.xe() + ["vm-export", f"uuid={uuid}", "filename=/dev/null"]
                            + ([xe_arg] if xe_arg else []))["t"]

    def xe_import(self, xva: str, source: str) -> tuple[float, bool]:
        """(wall time, identical to ``source``) of ``xe vm-import`` of ``xva``; the VM is
        destroyed after the comparison."""
        r = self.measure(self.xe() + ["vm-import", f"filename={xva}",
                                      f"sr-uuid={self.sr_uuid}"])
        vm = self.x.VM.get_by_uuid(r["out"].decode().split(",")[0].strip())
        return r["t"], self.check_and_drop(vm, source)[0]

    def check_and_drop(self, vm: str, source: str) -> tuple[bool, int]:
        """(identical to the source, st_blocks) of the imported VM's disk; then destroy it."""
        x = self.x
        vdis = [x.VBD.get_VDI(b) for b in x.VM.get_VBDs(vm)]
        assert len(vdis) == 1, vdis
        path = self.disk_path(vdis[0])
        same = subprocess.run(["cmp", "-s", source, path]).returncode == 0
        blocks = os.stat(path).st_blocks
        x.VM.destroy(vm)
        for vdi in vdis:
            x.VDI.destroy(vdi)
        os.sync()   # the removal's file-system work done before the next measurement
        return same, blocks


def median_of(runs: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in runs) for k in ("t", "cpu", "rss")}
    out["t_min"] = min(r["t"] for r in runs)
    out["rss_max"] = max(r["rss"] for r in runs)
    return out


def anchors(disk: str, work: str) -> dict:
    gz, back = os.path.join(work, "disk.gz"), os.path.join(work, "pigz-back.raw")
    a = {"pigz": sh(f"pigz -p 2 -6 -c {shlex.quote(disk)} > /dev/null"),
         "gzip": sh(f"gzip -6 -c {shlex.quote(disk)} > /dev/null")}
    subprocess.run(f"pigz -p 2 -6 -c {shlex.quote(disk)} > {gz}", shell=True, check=True)
    a["gz_bytes"] = os.path.getsize(gz)
    a["unpigz"] = sh(f"pigz -dc {gz} | dd of={back} bs=1M conv=sparse status=none")
    a["unpigz_blocks"] = os.stat(back).st_blocks
    os.unlink(gz)
    os.unlink(back)
    return a


LAYOUTS = (("appliance", "&format=appliance"), ("xapi+gzip", "&format=xapi&use_compression=true"))


def run_size(b: Bench, size: int, data: bytes, repeat: int, with_anchors: bool) -> dict:
    uuid, disk = b.make_vm(size, data)
    res: dict = {"size": size, "src_blocks": os.stat(disk).st_blocks}
    if with_anchors:
        res["anchors"] = anchors(disk, b.work)
    for name, query in LAYOUTS:
        exports = [b.export(uuid, query) for _ in range(repeat)]
        xva = os.path.join(b.work, f"{name}.xva")
        b.export(uuid, query, xva)
        imports, checks = [], []
        for _ in range(repeat):
            r = b.import_(xva)
            imports.append(r)
            checks.append(b.check_and_drop(r["vm"], disk))
        res[name] = {"export": median_of(exports), "import": median_of(imports),
                     "xva_bytes": os.path.getsize(xva),
                     "identical": all(c[0] for c in checks),
                     "blocks": max(c[1] for c in checks)}
        os.unlink(xva)
    return res


# --- dense disks ----------------------------------------------------------------------------
DENSE_LAYOUTS = (("appliance", "&format=appliance", "format=appliance", "isal"),
                 ("xapi", "", "", "http"),
                 ("xapi+gzip", "&use_compression=true", "compress=true", "isal"),
                 ("xapi+zstd", "&use_compression=zstd", "compress=zstd", "zstd"))


def dense_data(size: int) -> dict[str, bytes]:
    """The two dense disks: random, and mixed (binaries, text, random, zeros, in that order)."""
    q = size // 8 // (4 * MiB) * (4 * MiB)
    mixed = (harvest(["/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*"], 2 * q)
             + harvest(["/usr/share/**/*.txt", "/usr/share/**/*.html", "/usr/share/**/*.py",
                        "/usr/share/doc/**/*", "/usr/share/**/*"], 3 * q)
             + os.urandom(2 * q))
    mixed += bytes(8 * q - len(mixed))
    return {"random": os.urandom(8 * q), "mixed": mixed}


def warm(disk: str) -> None:
    """The disk into the page cache (before each timed command that reads it)."""
    sh(f"cat {shlex.quote(disk)} > /dev/null")


def run_dense(b: Bench, data: bytes, repeat: int) -> dict:
    uuid, disk = b.make_vm(len(data), data)
    q = shlex.quote(disk)
    floor = os.path.join(os.path.dirname(disk), "dd-floor.raw")
    files = {}
    for name, query, _, _ in DENSE_LAYOUTS:                 # the files to import, made once
        files[name] = os.path.join(b.work, f"dense-{name}.xva")
        b.export(uuid, query, files[name])
    # the HTTP floor: a C server (busybox httpd, sendfile) sending our xapi export's bytes
    www = os.path.join(b.work, "www")
    os.makedirs(www, exist_ok=True)
    served = os.path.join(www, "xapi.xva")
    os.link(files["xapi"], served)
    static, static_url = static_server(www)
    rounds: list[dict] = []
    for _ in range(repeat):
        r: dict = {}
        sh(f"cat {shlex.quote(served)} > /dev/null")
        r["http"] = sh(f"curl -sSf -o /dev/null {static_url}/xapi.xva")
        for key, cmd in (("cat", f"cat {q} > /dev/null"),
                         ("isal", f"{shlex.quote(sys.executable)} -m isal.igzip -1 -c {q}"
                                  " > /dev/null"),
                         ("zstd", f"zstd -q -3 -T1 -c {q} > /dev/null"),
                         ("dd", f"dd if={q} of={floor} bs=1M conv=fsync status=none"),
                         ("dd_direct", f"dd if={q} of={floor} bs=4M oflag=direct conv=fsync"
                                       " status=none")):
            warm(disk)
            r[key] = sh(cmd)
            if key.startswith("dd"):
                os.unlink(floor)
                os.sync()
        r["xe_start"] = sh(shlex.join(b.xe() + ["vm-list", f"uuid={uuid}", "params=uuid"]))
        for name, query, xe_arg, _ in DENSE_LAYOUTS:
            warm(disk)
            r[f"{name} export"] = b.export(uuid, query)
            warm(disk)
            r[f"{name} xe export"] = b.xe_export(uuid, xe_arg)
            r[f"{name} import"] = imp = b.import_(files[name])
            same, _ = b.check_and_drop(imp["vm"], disk)
            r[f"{name} xe import"], same_xe = b.xe_import(files[name], disk)
            r[f"{name} identical"] = same and same_xe
        rounds.append(r)
    static.kill()
    static.wait()
    os.unlink(served)
    warm(disk)
    pigz = sh(f"pigz -p 2 -1 -c {q} > /dev/null")
    res = {"rounds": rounds, "pigz": pigz,
           "bytes": {name: os.path.getsize(f) for name, f in files.items()}}
    for f in files.values():
        os.unlink(f)
    return res


XE_LAYOUTS = [layout for layout in DENSE_LAYOUTS if layout[0] in ("xapi", "xapi+gzip")]


def run_xe(b: Bench, size: int, repeat: int) -> dict:
    """xe against curl on a bigger random disk, where xe's start weighs less: vm-export to
    /dev/null and vm-import of that export, curl and xe in turn (the page cache warmed before
    each export); each import compared with the disk, then destroyed."""
    uuid, disk = b.make_vm(size, os.urandom(size))
    out: dict = {}
    for name, query, xe_arg, _ in XE_LAYOUTS:
        xva = os.path.join(b.work, f"xe-{name}.xva")
        b.export(uuid, query, xva)
        os.sync()
        r: dict[str, list] = {"curl export": [], "xe export": [], "curl import": [],
                              "xe import": [], "identical": []}
        for _ in range(repeat):
            warm(disk)
            r["curl export"].append(b.export(uuid, query)["t"])
            warm(disk)
            r["xe export"].append(b.xe_export(uuid, xe_arg))
            imp = b.import_(xva)
            r["curl import"].append(imp["t"])
            r["identical"].append(b.check_and_drop(imp["vm"], disk)[0])
            t, same = b.xe_import(xva, disk)
            r["xe import"].append(t)
            r["identical"].append(same)
        os.unlink(xva)
        os.sync()
        out[name] = r
    return out


def report_xe(res: dict, size: int) -> None:
    print(f"\n== xe against curl, {size / GiB:g} GiB of random data (medians; xe's start "
          "included) ==")
    print(f"{'':12s} {'curl export':>11s} {'xe export':>9s} {'xe/curl':>7s} "
          f"{'curl import':>11s} {'xe import':>9s} {'xe/curl':>7s} cmp")
    for name, r in res.items():
        m = {k: statistics.median(v) for k, v in r.items() if k != "identical"}
        print(f"{name:12s} {m['curl export']:11.2f} {m['xe export']:9.2f} "
              f"{m['xe export'] / m['curl export']:7.2f} {m['curl import']:11.2f} "
              f"{m['xe import']:9.2f} {m['xe import'] / m['curl import']:7.2f} "
              f"{'ok' if all(r['identical']) else 'DIFF'}")


def _med(rounds: list[dict], key: str, field: str | None = None) -> float:
    vals = [r[key][field] if field else r[key] for r in rounds]
    return statistics.median(vals)


def report_dense(dense: dict[str, dict], size: int) -> None:
    rounds = len(next(iter(dense.values()))["rounds"])
    print(f"\n== dense {size / GiB:g} GiB disks (median of {rounds} rounds; anchors in the "
          "same rounds) ==")
    for kind, res in dense.items():
        rounds = res["rounds"]
        a = {k: _med(rounds, k)
             for k in ("cat", "http", "isal", "zstd", "dd", "dd_direct", "xe_start")}
        print(f"\n-- {kind}: cat {a['cat']:.2f} s, http (busybox httpd sending the xapi "
              f"export) {a['http']:.2f} s, one isal thread {a['isal']:.2f} s, "
              f"zstd -3 -T1 {a['zstd']:.2f} s, pigz -p2 -1 {res['pigz']:.2f} s (once), "
              f"dd conv=fsync {a['dd']:.2f} s (oflag=direct {a['dd_direct']:.2f} s), "
              f"xe start+login {a['xe_start']:.2f} s")
        print(f"{'':12s} {'export s':>9s} {'cpu':>6s} {'RSS+':>6s} {'ratio':>13s} {'xe s':>6s} "
              f"{'xe/curl':>8s} {'-start':>6s} {'import s':>9s} {'cpu':>6s} {'RSS+':>6s} "
              f"{'/dd':>6s} {'/ddD':>5s} {'xe s':>6s} {'xe/curl':>8s} {'-start':>6s} "
              f"{'MiB':>6s} cmp")
        for name, _, _, anchor in DENSE_LAYOUTS:
            e, i = f"{name} export", f"{name} import"
            et, it = _med(rounds, e, "t"), _med(rounds, i, "t")
            xet, xit = _med(rounds, f"{name} xe export"), _med(rounds, f"{name} xe import")
            ratio = f"{et / a[anchor]:.2f}x {anchor}"
            same = all(r[f"{name} identical"] for r in rounds)
            st = a["xe_start"]
            print(f"{name:12s} {et:9.2f} {_med(rounds, e, 'cpu'):6.2f} "
                  f"{max(r[e]['rss'] for r in rounds):6.1f} {ratio:>13s} {xet:6.2f} "
                  f"{xet / et:8.2f} {(xet - st) / et:6.2f} {it:9.2f} "
                  f"{_med(rounds, i, 'cpu'):6.2f} {max(r[i]['rss'] for r in rounds):6.1f} "
                  f"{it / a['dd']:6.2f} {it / a['dd_direct']:5.2f} {xit:6.2f} {xit / it:8.2f} "
                  f"{(xit - st) / it:6.2f} {res['bytes'][name] / MiB:6.0f} "
                  f"{'ok' if same else 'DIFF'}")
    print("goals: gzip layouts <= 0.6x one isal thread, zstd <= 0.6x zstd -3 -T1, imports <= "
          "1.2x dd conv=fsync, xe <= 1.1x curl, RSS+ < 150 MiB\n(/ddD: to dd oflag=direct; "
          "-start: xe's time less its start and login, as timed by xe vm-list)")


# --- report ---------------------------------------------------------------------------------
def report(small: dict, big: dict | None, machine: str) -> None:
    a = small["anchors"]
    print(f"\n{machine}")
    print(f"\n== {small['size'] / GiB:g} GiB sparse disk, 128 MiB data "
          f"(st_blocks {small['src_blocks']}) ==")
    print(f"{'':38s} {'wall s':>8s} {'min s':>7s} {'srv cpu':>8s} {'RSS+MiB':>8s}  notes "
          f"(RSS+: peak over the idle server, max of runs)")
    print(f"{'pigz -p 2 -6 -c > /dev/null':38s} {a['pigz']:8.2f}")
    print(f"{'gzip -6 -c > /dev/null':38s} {a['gzip']:8.2f}")
    print(f"{'pigz -dc | dd conv=sparse':38s} {a['unpigz']:8.2f} {'':7s} {'':8s} {'':8s}  "
          f"st_blocks {a['unpigz_blocks']}, .gz {a['gz_bytes'] / MiB:.1f} MiB")
    for sz in (small, big):
        if sz is None:
            continue
        tag = f"{sz['size'] / GiB:g}G"
        for name, _ in LAYOUTS:
            r = sz[name]
            e, i = r["export"], r["import"]
            print(f"{tag + ' export ' + name:38s} {e['t']:8.2f} {e['t_min']:7.2f} "
                  f"{e['cpu']:8.2f} {e['rss_max']:8.1f}  {r['xva_bytes'] / MiB:.1f} MiB, "
                  f"{e['t'] / a['pigz']:.3f}x pigz")
            print(f"{tag + ' import ' + name:38s} {i['t']:8.2f} {i['t_min']:7.2f} "
                  f"{i['cpu']:8.2f} {i['rss_max']:8.1f}  {i['t'] / a['unpigz']:.3f}x pigz|dd, "
                  f"identical={r['identical']}, st_blocks {r['blocks']} "
                  f"(source {sz['src_blocks']})")
        if sz is big and "anchors" in big:
            ba = big["anchors"]
            print(f"{tag + ' pigz -p 2 -6':38s} {ba['pigz']:8.2f}")
            print(f"{tag + ' gzip -6':38s} {ba['gzip']:8.2f}")
            print(f"{tag + ' pigz -dc | dd conv=sparse':38s} {ba['unpigz']:8.2f}")

    print("\nGoals (median wall time; ratios against the small-disk anchors, also for the big disk):")
    print(f"{'':28s} {'export/pigz':>12s} {'import/unpigz':>14s} {'RSS+ MiB':>9s} "
          f"{'sparse':>7s} {'cmp':>5s}")
    for sz in (small, big):
        if sz is None:
            continue
        for name, _ in LAYOUTS:
            r = sz[name]
            er = r["export"]["t"] / a["pigz"]
            ir = r["import"]["t"] / a["unpigz"]
            rss = max(r["export"]["rss_max"], r["import"]["rss_max"])
            sparse = r["blocks"] <= sz["src_blocks"]
            ok = lambda c: "ok" if c else "MISS"  # noqa: E731
            print(f"{sz['size'] / GiB:g} GiB {name:20s} {er:6.3f} {ok(er <= 0.1):>5s} "
                  f"{ir:7.3f} {ok(ir <= 0.5):>6s} {rss:6.1f} {ok(rss < 300):>2s} "
                  f"{ok(sparse):>7s} {ok(r['identical']):>5s}")
    print("goals: export <= 0.1x pigz -p 2 -6; import <= 0.5x pigz -dc | dd conv=sparse; "
          "RSS growth < 300 MiB; st_blocks <= source; identical")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    return (f"machine: nproc {os.cpu_count()}, {model}, Python {platform.python_version()}, "
            f"{platform.platform()}, load {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1)
    ap.add_argument("--big-gib", type=float, default=16, help="0 to skip")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each transfer (median)")
    ap.add_argument("--dense-gib", type=float, default=1,
                    help="dense disks (random, mixed) of this size in every layout (0 to skip)")
    ap.add_argument("--xe-gib", type=float, default=3,
                    help="xe against curl on a random disk of this size (0 to skip)")
    ap.add_argument("--only-dense", action="store_true", help="skip the sparse disks")
    ap.add_argument("--big-anchors", action="store_true",
                    help="also run pigz/gzip on the big disk (minutes)")
    ap.add_argument("--dir", default=None, help="temp dir parent (same fs as the server)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the server, remove files
    data = (harvest(["/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*"], 32 * MiB)
            + harvest(["/usr/share/**/*.txt", "/usr/share/**/*.html", "/usr/share/**/*.py",
                       "/usr/share/doc/**/*", "/usr/share/**/*"], 64 * MiB)
            + random.Random(1).randbytes(32 * MiB))
    print(machine(), flush=True)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-transfer-") as work:
        srv = Server(Path(work) / "data").start()
        # the daemon's stdout is a pipe: keep draining it so a chatty log cannot block it
        threading.Thread(target=lambda: [None for _ in srv.proc.stdout], daemon=True).start()
        try:
            b = Bench(srv, work)
            small = big = None
            if not args.only_dense:
                small = run_size(b, int(args.size_gib * GiB), data, args.repeat, True)
                print(f"{args.size_gib:g} GiB done, {machine()}", flush=True)
            if args.big_gib and not args.only_dense:
                big = run_size(b, int(args.big_gib * GiB), data, args.repeat, args.big_anchors)
                print(f"{args.big_gib:g} GiB done, {machine()}", flush=True)
            dense = None
            if args.dense_gib:
                size = int(args.dense_gib * GiB) // (32 * MiB) * (32 * MiB)
                dense = {kind: run_dense(b, data, args.repeat)
                         for kind, data in dense_data(size).items()}
                print(f"dense {args.dense_gib:g} GiB done, {machine()}", flush=True)
            xe = None
            if args.xe_gib:
                xe_size = int(args.xe_gib * GiB) // MiB * MiB
                xe = run_xe(b, xe_size, args.repeat)
                print(f"xe {args.xe_gib:g} GiB done, {machine()}", flush=True)
        finally:
            srv.stop()
    if small:
        report(small, big, machine())
    if dense:
        report_dense(dense, size)
    if xe:
        report_xe(xe, xe_size)


if __name__ == "__main__":
    main()
