"""Ansible's XenServer modules (community.general, bundled by the `ansible` package from PyPI)
run a playbook of an administrator's flow against the real server; each registered result is
checked, and the server's state afterwards. `make test` installs Ansible in .venv-ansible."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv-ansible" / "bin"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not (ANSIBLE / "ansible-playbook").exists():
        pytest.fail("Ansible is not installed: run `make test` (it makes .venv-ansible)")
    work = tmp_path_factory.mktemp("ansible")
    p = subprocess.run(["unshare", "--mount", "--net", sys.executable, "-m",
                        "tests.clients.ansible_scenario", str(work), str(ANSIBLE)],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert facts["rc"] == 0, facts["output"]
    return facts


def _instance(run, task):
    result = run["results"][task]
    assert not result["failed"], result
    return result["instance"]


def test_create_from_a_template_with_cpus_memory_disk_and_network(run):
    vm = _instance(run, "created")
    assert run["results"]["created"]["changed"]
    assert vm["hardware"]["num_cpus"] == 2 and vm["hardware"]["memory_mb"] == 512
    assert [(d["name"], d["size"]) for d in vm["disks"]] == [("ans-vm-disk", 2**30)]
    assert [n["name"] for n in vm["networks"]] == [run["network"]]
    assert vm["state"] == "poweredoff"
    assert vm["cdrom"] == {"type": "iso", "iso_name": "install.iso"}     # VBD.create + insert


def test_modify_adds_a_disk_and_a_network_interface(run):
    vm = _instance(run, "modified")
    assert vm["name_desc"] == "changed by ansible" and vm["hardware"]["memory_mb"] == 768
    assert [d["name"] for d in vm["disks"]] == ["ans-vm-disk", "ans-vm-data"]
    assert vm["disks"][1]["size"] == 64 * 2**20
    assert len(vm["networks"]) == 2 and len({n["mac"] for n in vm["networks"]}) == 2
    assert vm["cdrom"] == {"type": "iso", "iso_name": "tools.iso"}       # VBD.eject + insert
    assert {"cdrom": ["iso_name"]} in run["results"]["modified"]["changes"]


@pytest.mark.parametrize("task,state", [
    ("powered_on", "poweredon"), ("restarted", "poweredon"), ("reboot_guest", "poweredon"),
    ("suspended", "suspended"), ("resumed", "poweredon"), ("shutdown_guest", "poweredoff"),
    ("powered_off", "poweredoff")])
def test_every_power_state(run, task, state):
    assert run["results"][task]["changed"]
    assert _instance(run, task)["state"] == state


def test_guest_info_and_facts_over_the_local_socket(run):
    vm = _instance(run, "info")
    assert vm["name"] == "ans-vm" and len(vm["disks"]) == 2
    facts = run["results"]["facts"]["ansible_facts"]
    assert "ans-vm" in facts["xs_vms"] and "Local storage" in facts["xs_srs"]
    assert facts["xs_networks"]


def test_absent_removes_the_vm_and_its_disks(run):
    assert run["results"]["removed"]["changed"]
    assert run["left"] == [] and run["vdis_left"] == []
    assert run["isos_left"] == ["install.iso", "tools.iso"]       # the library keeps its images
