"""Xen Orchestra's client against the real server, inside a network namespace of its own.

XO reaches a host's HTTP handlers (statistics) at `host.address` on the scheme's default port,
so the server must listen on 127.0.0.1:80: a fresh network namespace has a loopback of its own
where that port is free and nothing outside is reachable. Run as
`unshare --net python -m tests.clients.xo_scenario WORKDIR`; prints one JSON object of what the
client saw and what the server holds afterwards (the test checks it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.server import Server

HERE = Path(__file__).resolve().parent / "xo"


def _open(srv: Server, path: str):
    """GET `path` with root's Basic credentials."""
    req = urllib.request.Request(srv.url + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"root:{srv.password}".encode()).decode())
    return urllib.request.urlopen(req, timeout=60)


def _get(srv: Server, path: str) -> bytes:
    with _open(srv, path) as r:
        return r.read()


def _raw_sha(srv: Server, vdi: str) -> str:
    h = hashlib.sha256()
    with _open(srv, f"/export_raw_vdi?vdi={vdi}") as r:
        while chunk := r.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _wait_for_host_stats(srv: Server, timeout: float = 30.0) -> None:
    """The first collection has run (XO would see no columns before it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if json.loads(_get(srv, "/rrd_updates?start=-60&host=true&json=true"))["meta"]["legend"]:
            return
        time.sleep(0.2)
    raise RuntimeError("no host statistics after 30 s")


def _disks(srv: Server, x, vm: str) -> dict[str, str]:
    return {x.VBD.get_userdevice(b): _raw_sha(srv, x.VBD.get_VDI(b))
            for b in x.VM.get_VBDs(vm) if x.VBD.get_type(b) == "Disk"}


def _vdi_file(x, vdi: str) -> Path:
    pbd = x.SR.get_PBDs(x.VDI.get_SR(vdi))[0]
    return Path(x.PBD.get_device_config(pbd)["path"]) / (x.VDI.get_location(vdi) + ".raw")


def _node(srv: Server, *args: str) -> dict:
    p = subprocess.run(["node", str(HERE / "xo_incremental.mjs"), srv.url, srv.password, *args],
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": p.stderr[-3000:]}


def _incremental(srv: Server, x, work: Path) -> dict:
    """XO's incremental backup of a VM with one disk: a full VHD, then 16 MiB change, then a
    delta against the first snapshot, both restored into one VDI with format=vhd."""
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vm = x.VM.create({"name_label": "inc", "memory_static_max": str(2**28)})
    disk = x.VDI.create({"SR": sr, "virtual_size": str(64 * 2**20), "type": "user",
                         "name_label": "inc disk"})
    x.VBD.create({"VM": vm, "VDI": disk, "userdevice": "0", "mode": "RW", "type": "Disk"})
    with open(_vdi_file(x, disk), "r+b") as f:
        f.write(os.urandom(3 * 2**20))
    full = _node(srv, "full", "inc")
    if "error" in full:
        return {"full": full}
    with open(_vdi_file(x, disk), "r+b") as f:          # 16 MiB changed since the snapshot
        f.seek(40 * 2**20)
        f.write(os.urandom(16 * 2**20))
    delta = _node(srv, "delta", "inc", full["vdi"], full["target"])
    if "error" in delta:
        return {"full": full, "delta": delta}
    return {"full": full, "delta": delta,
            "restored_equals_second": _vdi_file(x, full["target"]).read_bytes()
            == _vdi_file(x, delta["vdi"]).read_bytes(),
            "first_differs": _vdi_file(x, full["vdi"]).read_bytes()
            != _vdi_file(x, delta["vdi"]).read_bytes(),
            "snapshot_of": x.VM.get_snapshot_of(full["snapshot"]) == vm,
            "is_a_snapshot": x.VM.get_is_a_snapshot(full["snapshot"])}


def main(workdir: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(workdir)
    srv = Server(work / "data", "--listen", "127.0.0.1:80", "--stats-interval", "1").start()
    try:
        _wait_for_host_stats(srv)
        node = subprocess.run(["node", str(HERE / "xo_client.mjs"), srv.url, srv.password,
                               str(work)], capture_output=True, text=True, timeout=300)
        steps = {}
        for line in node.stdout.splitlines():
            if line.startswith("{"):
                item = json.loads(line)
                steps[item.pop("step")] = item
        x = srv.session().xenapi
        facts = {"steps": steps, "node_rc": node.returncode, "node_stderr": node.stderr[-4000:],
                 "tasks": {r["name_label"]: r["status"] for r in x.task.get_all_records().values()}}
        transfer = steps.get("transfer")
        if transfer:
            imported = [r for r in transfer["result"].replace(",", " ").split()
                        if r.startswith("OpaqueRef:")]
            facts["imported"] = imported
            if imported:
                facts["imported_name"] = x.VM.get_name_label(imported[0])
                facts["disks_source"] = _disks(srv, x, transfer["source"])
                facts["disks_imported"] = _disks(srv, x, imported[0])
        facts["incremental"] = _incremental(srv, x, work)
        print(json.dumps(facts))
    finally:
        srv.stop()


if __name__ == "__main__":
    main(sys.argv[1])
