"""Two raw uploads at once into an SR on a small file system (issue 14 item 10): each fits the
free space alone, together they do not, so the disk fills during one of them.

Run as `unshare --mount python -m tests.httpd.sr_full_scenario WORKDIR`: a 48 MiB tmpfs is
mounted (in this mount namespace only) under WORKDIR for the agent's data directory; prints one
JSON object with what each upload answered and what the SR holds afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.server import Server

MiB = 2**20


def main(workdir: str) -> None:
    work = Path(workdir)
    small = work / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    srv = Server(small / "data", "--no-demo").start()
    try:
        x = srv.session().xenapi
        sr = x.pool.get_default_SR(x.pool.get_all()[0])
        sr_dir = x.PBD.get_device_config(x.SR.get_PBDs(sr)[0])["path"]
        vdis, bodies, before = [], [], []
        for i in range(2):
            vdi = x.VDI.create({"SR": sr, "virtual_size": str(30 * MiB), "type": "user",
                                "name_label": f"target{i}"})
            path = Path(sr_dir) / (x.VDI.get_location(vdi) + ".raw")
            before.append(hashlib.sha256(path.read_bytes()).hexdigest())
            body = work / f"body{i}"
            body.write_bytes(os.urandom(30 * MiB))
            vdis.append((vdi, path))
            bodies.append(body)
        url = srv.url.replace("http://", f"http://root:{srv.password}@")
        uploads = [subprocess.Popen(["curl", "-sS", "-T", str(body), "-D", "-",
                                     f"{url}/import_raw_vdi?vdi={vdi}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                   for (vdi, _), body in zip(vdis, bodies)]
        answers = [p.communicate(timeout=120)[0].decode(errors="replace") for p in uploads]
        result = {"answers": answers, "sr_files": sorted(os.listdir(sr_dir)), "vdis": []}
        for (vdi, path), body, old in zip(vdis, bodies, before):
            now = hashlib.sha256(path.read_bytes()).hexdigest()
            result["vdis"].append({
                "unchanged": now == old,
                "uploaded": now == hashlib.sha256(body.read_bytes()).hexdigest()})
        tasks = x.task.get_all_records()
        result["tasks"] = sorted((t["status"], t["error_info"][:1]) for t in tasks.values()
                                 if t["name_label"] == "Import of a raw VDI")
        print(json.dumps(result))
    finally:
        srv.stop()
        subprocess.run(["umount", str(small)], check=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
