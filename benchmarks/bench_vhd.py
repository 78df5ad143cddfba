"""VHD disk export over HTTP next to qemu-img, and an incremental delta next to a full export.

    .venv/bin/python benchmarks/bench_vhd.py [--size-gib 1] [--repeat 3]

Starts `xcp-httpd serve` in a temp dir (tests.server.Server), makes a VDI of --size-gib holding
128 MiB of realistic data (32 MiB binaries, 64 MiB text, 32 MiB random in 4 MiB extents, as
bench_transfer.py), snapshots it, then in one run, side by side (median of --repeat):

  anchor    qemu-img convert -f raw -O vpc -o subformat=dynamic disk out.vhd   (the same file)
  ours      curl -o out.vhd .../export_raw_vdi?vdi=<snapshot's VDI>&format=vhd
            (and the same to /dev/null: what the server costs without curl's file writes)
  floor     busybox httpd (C, sendfile) serving our VHD as a static file, to curl -o file
            and -o /dev/null: what any HTTP server costs here for the same bytes; and an
            empty static file: curl's start and one request, the fixed part of every export
  delta     16 MiB changed in the VM's disk, then a second snapshot, then
            curl -o delta.vhd .../export_raw_vdi?vdi=<second>&format=vhd&base=<first>

Both of our outputs are checked: `qemu-img convert -f vpc -O raw` of the full VHD equals the disk;
the delta holds 8 blocks. Goals: full <= 0.5x qemu-img's time; the delta <= 0.2x the full.
With --xfs all of it runs on an XFS file system with reflinks (loop-mounted in a mount namespace
of its own): there snapshots share their disk's blocks and the delta reads only the changed ones.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_xva import build_disk, harvest  # noqa: E402
from tests.server import Server  # noqa: E402

MiB = 1 << 20


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def static_server(root: str) -> tuple[subprocess.Popen, str]:
    """busybox httpd serving `root` on a free loopback port (the floor anchor)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", root])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, url
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("busybox httpd did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--xfs", action="store_true",
                    help="run on an XFS file system with reflinks (a loop-mounted image in a "
                         "mount namespace of its own), where snapshots share their disk's blocks")
    args = ap.parse_args()
    if args.xfs and not os.environ.get("BENCH_VHD_MOUNTS"):
        os.execvpe("unshare", ["unshare", "--mount", sys.executable, *sys.argv],
                   {**os.environ, "BENCH_VHD_MOUNTS": "private"})
    if args.xfs:
        with tempfile.TemporaryDirectory() as d:
            image, mnt = os.path.join(d, "xfs.img"), os.path.join(d, "xfs")
            os.mkdir(mnt)
            with open(image, "wb") as f:
                f.truncate(8 << 30)
            subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", image], check=True)
            subprocess.run(["mount", "-o", "loop", image, mnt], check=True)
            try:
                os.environ["TMPDIR"] = mnt
                print("on XFS (reflink=1), loop-mounted")
                run(args)
            finally:
                subprocess.run(["umount", mnt], check=True)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    size = int(args.size_gib * (1 << 30))
    data = (harvest(["/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*"], 32 * MiB)
            + harvest(["/usr/share/**/*.txt", "/usr/share/**/*.html", "/usr/share/**/*.py",
                       "/usr/share/doc/**/*"], 64 * MiB) + os.urandom(32 * MiB))
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as work:
        srv = Server(Path(work) / "data").start()
        try:
            x = srv.session().xenapi
            base = srv.url.replace("http://", f"http://root:{srv.password}@")
            sr = x.pool.get_default_SR(x.pool.get_all()[0])
            vm = x.VM.create({"name_label": "bench-vhd", "memory_static_max": str(2**28)})
            vdi = x.VDI.create({"SR": sr, "virtual_size": str(size), "type": "user",
                                "name_label": "bench"})
            x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW", "type": "Disk"})
            pbd = x.SR.get_PBDs(sr)[0]
            path = os.path.join(x.PBD.get_device_config(pbd)["path"],
                                x.VDI.get_location(vdi) + ".raw")
            build_disk(path, size, data)
            os.sync()

            def snap_vdi(name: str) -> str:
                s = x.VM.snapshot(vm, name)
                return x.VBD.get_VDI(x.VM.get_VBDs(s)[0])

            first = snap_vdi("first")
            out = os.path.join(work, "out.vhd")
            runs = {"qemu-img": [], "ours": [], "ours_null": []}
            for _ in range(args.repeat):
                runs["qemu-img"].append(timed(["qemu-img", "convert", "-f", "raw", "-O", "vpc",
                                               "-o", "subformat=dynamic", path, out]))
                runs["ours"].append(timed(["curl", "-sSf", "-o", out,
                                           f"{base}/export_raw_vdi?vdi={first}&format=vhd"]))
                runs["ours_null"].append(timed(["curl", "-sSf", "-o", "/dev/null",
                                                f"{base}/export_raw_vdi?vdi={first}&format=vhd"]))
            www = os.path.join(work, "www")
            os.mkdir(www)
            shutil.copy(out, os.path.join(www, "full.vhd"))
            open(os.path.join(www, "empty"), "wb").close()
            static, static_url = static_server(www)
            try:
                for k in ("floor", "floor_null", "fixed"):
                    runs[k] = []
                for _ in range(args.repeat):
                    subprocess.run(["cat", os.path.join(www, "full.vhd")], check=True,
                                   stdout=subprocess.DEVNULL)          # in the page cache
                    runs["floor"].append(timed(["curl", "-sSf", "-o", out,
                                                f"{static_url}/full.vhd"]))
                    runs["floor_null"].append(timed(["curl", "-sSf", "-o", "/dev/null",
                                                     f"{static_url}/full.vhd"]))
                    runs["fixed"].append(timed(["curl", "-sSf", "-o", "/dev/null",
                                                f"{static_url}/empty"]))
            finally:
                static.kill()
                static.wait()
            back = os.path.join(work, "back.raw")
            subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", out, back],
                           check=True)
            same = subprocess.run(["cmp", "-n", str(size), path, back]).returncode == 0
            full_bytes = os.path.getsize(out)
            with open(path, "r+b") as f:                         # 16 MiB change
                f.seek(size // 2)
                f.write(os.urandom(16 * MiB))
            second = snap_vdi("second")
            delta = os.path.join(work, "delta.vhd")
            runs["delta"] = [timed(["curl", "-sSf", "-o", delta,
                                    f"{base}/export_raw_vdi?vdi={second}&format=vhd&base={first}"])
                             for _ in range(args.repeat)]
            med = {k: statistics.median(v) for k, v in runs.items()}
            print(f"machine: nproc {os.cpu_count()}, {size >> 20} MiB disk, 128 MiB data, "
                  f"median of {args.repeat}")
            print(f"qemu-img convert -O vpc     {med['qemu-img']:.3f} s")
            print(f"export_raw_vdi format=vhd  {med['ours']:.3f} s  ({med['ours'] / med['qemu-img']:.3f}x "
                  f"qemu-img; {full_bytes >> 20} MiB; qemu-img reads it back identical: {same})")
            print(f"  same, curl to /dev/null  {med['ours_null']:.3f} s  "
                  f"({med['ours_null'] / med['qemu-img']:.3f}x qemu-img: the server's part)")
            print(f"  delta (16 MiB changed)   {med['delta']:.3f} s  ({med['delta'] / med['ours']:.3f}x "
                  f"the full; {os.path.getsize(delta) >> 20} MiB)")
            print(f"floor: busybox httpd, our VHD as a static file: {med['floor']:.3f} s "
                  f"({med['floor'] / med['qemu-img']:.3f}x qemu-img; ours "
                  f"{med['ours'] / med['floor']:.3f}x it), to /dev/null {med['floor_null']:.3f} s "
                  f"(ours {med['ours_null'] / med['floor_null']:.3f}x it)")
            fixed = med["fixed"]
            print(f"  an empty static file (curl's start, one request): {fixed:.4f} s; the "
                  f"delta without it {(med['delta'] - fixed) / (med['ours'] - fixed):.3f}x "
                  f"the full without it")
            print("goals: full <= 0.5x qemu-img; delta <= 0.2x the full")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
