"""An incremental VHD export on a file system with reflinks (issue 13: the delta's cost follows
the data that changed): snapshots on XFS share their base's blocks, and the delta reads only
the blocks written since.

Run as `unshare --mount python -m tests.httpd.reflink_scenario WORKDIR`: a 320 MiB XFS image
(reflink=1) is made under WORKDIR and loop-mounted (in this mount namespace only) for the
agent's data directory; prints one JSON object with what was measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.server import Server
from xva.files import shared_extents

MiB = 2**20
SIZE = 64 * MiB                 # all of it data
CHANGED = (10 * MiB, 4 * MiB)   # written between the two snapshots: blocks 5 and 6


def _path(x, vdi: str) -> str:
    pbd = x.SR.get_PBDs(x.VDI.get_SR(vdi))[0]
    return os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")


def _shared(a: str, b: str) -> int:
    fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
    try:
        return sum(n for _, n in shared_extents(fa, fb, SIZE))
    finally:
        os.close(fa)
        os.close(fb)


def _rchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def main(workdir: str) -> None:
    work = Path(workdir)
    image, mnt = work / "xfs.img", work / "xfs"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(320 * MiB)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    try:
        srv = Server(mnt / "data", "--no-demo").start()
        try:
            print(json.dumps(delta_scenario(srv, work)))
        finally:
            srv.stop()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def delta_scenario(srv: Server, work: Path) -> dict:
    """Two snapshots of a 64 MiB disk with CHANGED written between them, and the delta
    exported (what the server read for it, from /proc/PID/io)."""
    x = srv.session().xenapi
    url = srv.url.replace("http://", f"http://root:{srv.password}@")
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vm = x.VM.create({"name_label": "reflinked", "memory_static_max": str(2**28)})
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(SIZE), "type": "user", "name_label": "d"})
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "mode": "RW", "type": "Disk"})
    disk = _path(x, vdi)
    data = bytearray(os.urandom(SIZE))
    with open(disk, "r+b") as f:
        f.write(data)
        os.fsync(f.fileno())

    def snapshot(name: str) -> str:
        s = x.VM.snapshot(vm, name)
        return x.VBD.get_VDI(x.VM.get_VBDs(s)[0])

    first = snapshot("first")
    shared_first = _shared(disk, _path(x, first))
    off, n = CHANGED
    new = os.urandom(n)
    data[off:off + n] = new
    with open(disk, "r+b") as f:     # as the guest would: in place
        f.seek(off)
        f.write(new)
        os.fsync(f.fileno())
    second = snapshot("second")
    shared_snapshots = _shared(_path(x, first), _path(x, second))

    delta = work / "delta.vhd"
    before = _rchar(srv.proc.pid)
    subprocess.run(["curl", "-sf", "-o", str(delta),
                    f"{url}/export_raw_vdi?vdi={second}&format=vhd&base={first}"], check=True)
    read = _rchar(srv.proc.pid) - before
    mapped = json.loads(subprocess.run(["qemu-img", "map", "-f", "vpc", "--output=json",
                                        str(delta)], check=True, capture_output=True,
                                       text=True).stdout)
    raw = work / "delta.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vpc", "-O", "raw", str(delta), str(raw)],
                   check=True)
    back = raw.read_bytes()
    return {"shared_first": shared_first, "shared_snapshots": shared_snapshots,
            "server_read": read, "delta_bytes": delta.stat().st_size,
            "data_ranges": [(m["start"], m["length"]) for m in mapped if m["data"]],
            "changed_ok": back[off:off + n] == new}


if __name__ == "__main__":
    main(sys.argv[1])
