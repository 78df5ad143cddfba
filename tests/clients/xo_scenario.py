"""Xen Orchestra's client against the real server, inside a network namespace of its own.

XO reaches a host's HTTP handlers (statistics) at `host.address` on the scheme's default port,
so the server must listen on 127.0.0.1:80: a fresh network namespace has a loopback of its own
where that port is free and nothing outside is reachable. Run as
`unshare --net python -m tests.clients.xo_scenario WORKDIR`; prints one JSON object of what the
client saw and what the server holds afterwards (the test checks it).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.server import Server

HERE = Path(__file__).resolve().parent / "xo"


def _raw_sha(srv: Server, vdi: str) -> str:
    req = urllib.request.Request(f"{srv.url}/export_raw_vdi?vdi={vdi}")
    import base64
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"root:{srv.password}".encode()).decode())
    h = hashlib.sha256()
    with urllib.request.urlopen(req, timeout=60) as r:
        while chunk := r.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _get(srv: Server, path: str) -> bytes:
    import base64
    req = urllib.request.Request(srv.url + path)
    req.add_header("Authorization", "Basic " + base64.b64encode(
        f"root:{srv.password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


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
        print(json.dumps(facts))
    finally:
        srv.stop()


if __name__ == "__main__":
    main(sys.argv[1])
