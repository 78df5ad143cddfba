"""VM commands against the real server: install, lifecycle, clone/copy, uninstall, errors."""

from __future__ import annotations

import re

import pytest

from .test_cli import UUID


def state(xe, u: str) -> str:
    return xe.out("vm-list", f"uuid={u}", "params=power-state", "--minimal")


@pytest.fixture
def installed(xe):
    sr = xe.out("pool-list", "params=default-SR", "--minimal")
    u = xe.out("vm-install", "template=Debian Etch 4.0", "new-name-label=xe-test-vm",
               f"sr-uuid={sr}")
    assert UUID.match(u)
    yield u
    xe("vm-uninstall", f"uuid={u}", "--force", check=False)


def test_vm_install_provisions_disks(xe, installed):
    u = installed
    assert state(xe, u) == "halted"
    assert xe.out("vm-param-get", f"uuid={u}", "param-name=is-a-template") == "false"
    vdis = xe.out("vbd-list", f"vm-uuid={u}", "params=vdi-uuid", "--minimal").split(",")
    assert len(vdis) == 1 and UUID.match(vdis[0])
    sr = xe.out("pool-list", "params=default-SR", "--minimal")
    assert xe.out("vdi-param-get", f"uuid={vdis[0]}", "param-name=sr-uuid") == sr
    # vm= by name works for every VM command
    assert xe.out("vm-list", "name-label=xe-test-vm", "--minimal") == u


def test_lifecycle(xe, installed):
    u = installed
    xe("vm-start", f"uuid={u}")
    assert state(xe, u) == "running"
    assert int(xe.out("vm-list", f"uuid={u}", "params=dom-id", "--minimal")) > 0
    xe("vm-reboot", "vm=xe-test-vm")
    assert state(xe, u) == "running"
    xe("vm-suspend", f"uuid={u}")
    assert state(xe, u) == "suspended"
    xe("vm-resume", f"uuid={u}")
    assert state(xe, u) == "running"
    xe("vm-reboot", f"uuid={u}", "--force")
    xe("vm-shutdown", f"uuid={u}")
    assert state(xe, u) == "halted"
    xe("vm-start", f"uuid={u}", "paused=true")
    assert state(xe, u) == "paused"
    xe("vm-shutdown", f"uuid={u}", "--force")
    assert state(xe, u) == "halted"


def test_bad_power_state_is_readable(xe, installed):
    r = xe("vm-suspend", f"uuid={installed}", check=False)
    assert r.returncode == 1
    assert "not in an appropriate power state" in r.stderr
    assert "expected: running" in r.stderr.lower() and "VM_BAD_POWER_STATE" in r.stderr


def test_clone_copy_uninstall(xe, installed):
    c = xe.out("vm-clone", f"uuid={installed}", "new-name-label=xe-clone",
               "new-name-description=cloned by xe")
    assert UUID.match(c) and c != installed
    assert xe.out("vm-param-get", f"uuid={c}", "param-name=name-description") == \
        "cloned by xe"
    sr = xe.out("pool-list", "params=default-SR", "--minimal")
    k = xe.out("vm-copy", "vm=xe-clone", "new-name-label=xe-copy", f"sr-uuid={sr}")
    assert UUID.match(k) and k not in (c, installed)
    disks = xe.out("vbd-list", f"vm-uuid={k}", "params=vdi-uuid", "--minimal").split(",")
    xe("vm-uninstall", f"uuid={k}", "--force")
    xe("vm-uninstall", f"uuid={c}", "--force")
    assert xe.out("vm-list", "name-label=xe-copy", "--minimal") == ""
    for d in disks:
        assert xe.out("vdi-list", f"uuid={d}", "--minimal") == ""
    # the original's disk is untouched
    assert xe.out("vbd-list", f"vm-uuid={installed}", "--minimal") != ""


def test_install_errors(xe):
    r = xe("vm-install", "template=No Such Template", "new-name-label=x", check=False)
    assert r.returncode == 1 and "no template named" in r.stderr
    r = xe("vm-install", "template=Debian Etch 4.0", check=False)
    assert r.returncode == 1 and "new-name-label" in r.stderr


def test_guest_metrics_params(xe, installed):
    """A running VM's guest metrics appear as VM parameters (networks, os-version), like xe."""
    net = xe.out("network-list", "--minimal").split(",")[0]
    xe("vm-vif-add", f"uuid={installed}", f"network-uuid={net}", "device=0")
    xe("vm-start", f"uuid={installed}")
    xe("event-wait", "class=vm", f"uuid={installed}", "guest-metrics=/=<not in database>",
       "timeout=60")
    out = xe.out("vm-param-list", f"uuid={installed}")
    assert "networks (MRO)" in out and "os-version (MRO)" in out
    xe("vm-shutdown", f"uuid={installed}", "--force")


def _listed(xe, *args, timeout=20.0):
    """Data sources appear with the first statistics collection after a start."""
    import time
    deadline = time.time() + timeout
    while True:
        out = xe.out(*args)
        if "name-label" in out or time.time() > deadline:
            return out
        time.sleep(0.5)


def test_host_data_sources(xe):
    out = _listed(xe, "host-data-source-list")
    assert "name-label ( RO)" in out
    first = re.search(r"name-label \( RO\)\s*: (\S+)", out).group(1)
    float(xe.out("host-data-source-query", f"data-source={first}"))


def test_vm_data_sources(xe, installed):
    xe("vm-start", f"uuid={installed}")
    out = _listed(xe, "vm-data-source-list", f"uuid={installed}")
    first = re.search(r"name-label \( RO\)\s*: (\S+)", out).group(1)
    float(xe.out("vm-data-source-query", f"uuid={installed}", f"data-source={first}"))
