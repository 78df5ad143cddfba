"""XVA export/import speed against pigz/gzip on a sparse disk with realistic data.

    .venv/bin/python benchmarks/bench_xva.py [--size-gib 1] [--big-gib 16] [--dir /tmp]

Builds a sparse disk of --size-gib holding 128 MiB of data (32 MiB binaries, 64 MiB text,
32 MiB random) scattered in extents, then times side by side: pigz -p 2 -6, gzip -6,
pigz -dc | dd conv=sparse, our appliance writer to /dev/null, and our reader applying that
XVA back to a sparse file.  Then the same data in a --big-gib virtual disk, to show that cost
follows data, not virtual size.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from xva.appliance import Appliance, VBDSpec, VDISpec, VMSpec  # noqa: E402
from xva.files import export_appliance, import_stream  # noqa: E402

MiB = 1 << 20
EXTENT = 4 * MiB


def harvest(patterns: list[str], want: int) -> bytes:
    """Real file contents (binaries or text) from the system, up to ``want`` bytes."""
    out, total = [], 0
    for pattern in patterns:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if total >= want:
                return b"".join(out)[:want]
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    with open(path, "rb") as f:
                        data = f.read(want - total)
                    out.append(data)
                    total += len(data)
            except OSError:
                pass
    data = b"".join(out)
    return (data * (want // max(1, len(data)) + 1))[:want]


def build_disk(path: str, size: int, data: bytes, seed: int = 7) -> None:
    """Scatter ``data`` in EXTENT pieces at random aligned offsets of a sparse file."""
    slots = size // EXTENT
    chosen = sorted(random.Random(seed).sample(range(slots), len(data) // EXTENT))
    with open(path, "wb") as f:
        f.truncate(size)
        for i, slot in enumerate(chosen):
            f.seek(slot * EXTENT)
            f.write(data[i * EXTENT:(i + 1) * EXTENT])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def shell(cmd: str) -> int:
    """Run a pipeline; return the bytes it wrote to stdout (counted by wc -c)."""
    out = subprocess.run(f"{cmd} | wc -c", shell=True, check=True, capture_output=True)
    return int(out.stdout)


def run(size: int, data: bytes, workdir: str, with_tools: bool) -> dict:
    disk = os.path.join(workdir, "disk.raw")
    build_disk(disk, size, data)
    os.system("sync")
    app = Appliance(VMSpec("vm", "bench", vbds=(VBDSpec("xvda", "root", "w", "vdi"),)),
                    (VDISpec("vdi", size, "file://xvda"),))
    r = {"size": size}
    if with_tools:
        r["pigz_t"], r["pigz_b"] = timed(lambda: shell(f"pigz -p 2 -6 -c {disk}"))
        r["gzip_t"], r["gzip_b"] = timed(lambda: shell(f"gzip -6 -c {disk}"))
        gz = os.path.join(workdir, "disk.gz")
        subprocess.run(f"pigz -p 2 -6 -c {disk} > {gz}", shell=True, check=True)
        back = os.path.join(workdir, "pigz-back.raw")
        r["unpigz_t"], _ = timed(lambda: subprocess.run(
            f"pigz -dc {gz} | dd of={back} bs=1M conv=sparse status=none", shell=True,
            check=True))
        r["unpigz_blocks"] = os.stat(back).st_blocks
        os.unlink(back)
        os.unlink(gz)

    def export(sink):
        exp = export_appliance(app, {"vdi": disk})
        n = 0
        for piece in exp:
            n += len(piece)
            if sink is not None:
                sink.write(piece)
        return n
    r["export_t"], r["export_b"] = timed(lambda: export(None))
    xva = os.path.join(workdir, "out.xva")
    with open(xva, "wb") as f:
        export(f)
    back = os.path.join(workdir, "back.raw")

    def chunks():
        with open(xva, "rb", buffering=0) as f:
            while piece := f.read(MiB):
                yield piece
    r["import_t"], _ = timed(lambda: import_stream(chunks(), lambda d: back))
    r["src_blocks"], r["import_blocks"] = os.stat(disk).st_blocks, os.stat(back).st_blocks
    same = subprocess.run(["cmp", disk, back]).returncode == 0
    r["identical"] = same
    for p in (xva, back, disk):
        os.unlink(p)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gib", type=float, default=1)
    ap.add_argument("--big-gib", type=float, default=16)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    data = (harvest(["/usr/bin/*", "/usr/lib/x86_64-linux-gnu/*.so*"], 32 * MiB)
            + harvest(["/usr/share/**/*.txt", "/usr/share/**/*.html", "/usr/share/**/*.py",
                       "/usr/share/doc/**/*", "/usr/share/**/*"], 64 * MiB)
            + random.Random(1).randbytes(32 * MiB))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, {platform.platform()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        for gib, tools in ((args.size_gib, True), (args.big_gib, True)):
            if gib <= 0:                        # --big-gib 0: only the first size
                continue
            r = run(int(gib * (1 << 30)), data, work, tools)
            print(f"\n== {gib:g} GiB sparse disk, 128 MiB data ==")
            print(f"pigz -p 2 -6       {r['pigz_t']:7.2f} s  {r['pigz_b'] / MiB:8.1f} MiB out")
            print(f"gzip -6            {r['gzip_t']:7.2f} s  {r['gzip_b'] / MiB:8.1f} MiB out")
            print(f"xva export         {r['export_t']:7.2f} s  {r['export_b'] / MiB:8.1f} MiB out"
                  f"   ratio to pigz {r['export_t'] / r['pigz_t']:.3f} (goal <= 0.1)")
            print(f"pigz -dc | dd      {r['unpigz_t']:7.2f} s  st_blocks {r['unpigz_blocks']}")
            print(f"xva import         {r['import_t']:7.2f} s  st_blocks {r['import_blocks']} "
                  f"(source {r['src_blocks']})   ratio to pigz|dd "
                  f"{r['import_t'] / r['unpigz_t']:.3f} (goal <= 0.5)  identical={r['identical']}")


if __name__ == "__main__":
    main()
