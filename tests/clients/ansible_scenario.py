"""Ansible's XenServer modules (community.general, from the `ansible` package on PyPI) run a
playbook against the real server, inside a mount and network namespace of their own.

`xenserver_facts` only talks to the local socket `/var/lib/xcp/xapi`; the private mount
namespace puts a tmpfs on /var/lib so the agent can listen there without touching the host.
Run as `unshare --mount --net python -m tests.clients.ansible_scenario WORKDIR ANSIBLE_BIN`;
prints one JSON object: the playbook's registered results and the server's state afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.server import Server

PLAYBOOK = Path(__file__).resolve().parent / "ansible" / "playbook.yml"


def main(workdir: str, ansible_bin: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/var/lib"], check=True)
    os.makedirs("/var/lib/xcp")
    work = Path(workdir)
    srv = Server(work / "data", "--unix-socket", "/var/lib/xcp/xapi").start()
    try:
        # an ISO library with two images, as an administrator makes one
        isos = work / "isos"
        isos.mkdir()
        for name in ("install.iso", "tools.iso"):
            (isos / name).write_bytes(os.urandom(64 * 1024))
        x = srv.session().xenapi
        host = x.host.get_all()[0]
        iso_sr = x.SR.create(host, {"path": str(isos)}, "0", "ISO library", "", "iso", "iso",
                             False, {})
        x.SR.scan(iso_sr)
        # the host's first network (named after a NIC of this machine, whatever it is called)
        network = min(r["name_label"] for r in x.network.get_all_records().values())
        results = work / "results.json"
        env = {**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
               "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
               "ANSIBLE_HOME": str(work / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
        p = subprocess.run([str(Path(ansible_bin) / "ansible-playbook"), "-i", "localhost,",
                            str(PLAYBOOK), "-e", f"xapi_url={srv.url}",
                            "-e", f"xapi_password={srv.password}",
                            "-e", f"results_file={results}",
                            "-e", json.dumps({"network_name": network})],
                           capture_output=True, text=True, env=env, timeout=600)
        facts = {"rc": p.returncode, "network": network, "output": p.stdout[-6000:] + p.stderr[-2000:],
                 "results": json.loads(results.read_text()) if results.exists() else None,
                 "left": x.VM.get_by_name_label("ans-vm"),
                 "vdis_left": [r["name_label"] for r in x.VDI.get_all_records().values()
                               if r["name_label"].startswith("ans-vm")],
                 "isos_left": sorted(r["name_label"] for r in x.VDI.get_all_records().values()
                                     if r["SR"] == iso_sr)}
        print(json.dumps(facts))
    finally:
        srv.stop()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
