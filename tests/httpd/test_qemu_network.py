"""Guest networks of the QEMU backend (issue 16): a Linux bridge per XenAPI network, a tap per
VIF, DHCP from the agent's dnsmasq, the guest's own address in VM_guest_metrics.

The agent runs in a network namespace this module makes (`ip netns add`, deleted at the end),
so its bridges, taps, dnsmasq and all guest traffic stay inside it; the test reaches the agent
through its Unix socket only (the SDK's UDSTransport, `xe`, `curl --unix-socket`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import XenAPI

from httpd.backends.qemu.guest import fetch_kernel
from tests.server import Server
from tests.waiting import until

from .test_qemu_backend import BOOT, CACHE, SerialConsole, provision

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-system-x86_64") is None or shutil.which("dnsmasq") is None
    or shutil.which("ip") is None or os.geteuid() != 0,
    reason="needs root, qemu-system-x86, dnsmasq-base and iproute2")

NETNS = f"xcptest{os.getpid()}"


@pytest.fixture(scope="module")
def netns_agent(tmp_path_factory):
    data = tmp_path_factory.mktemp("qnet")
    assert "_" not in str(data)                 # the SDK's UDSTransport spells "/" as "_"
    fetch_kernel(CACHE)
    (data / "guest").mkdir()
    shutil.copytree(CACHE, data / "guest" / "kernel")
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"],
                       check=True)
        srv = Server(data, "--backend", "qemu", "--accel", "tcg", "--no-demo",
                     "--guest-network", "bridge", wrap=("ip", "netns", "exec", NETNS))
        srv.start(timeout=120)
        try:
            yield srv
        finally:
            srv.kill_domains()
            srv.stop()
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def _session(srv: Server):
    s = XenAPI.Session("http://" + srv.socket_path.replace("/", "_"),
                       transport=XenAPI.UDSTransport())
    s.xenapi.login_with_password("root", srv.password, "2.21", "tests")
    return s


def _in_netns(srv: Server, *cmd: str) -> str:
    """A command in the agent's network namespace."""
    return subprocess.run(["ip", "netns", "exec", NETNS, *cmd], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def _vif_rx(srv: Server, uuid: str, device: str) -> float:
    r = subprocess.run(["curl", "-sf", "--unix-socket", srv.socket_path,
                        f"http://localhost/rrd_updates?start={int(time.time()) - 300}&cf=AVERAGE&interval=5"
                        f"&vm_uuid={uuid}&json=true"], capture_output=True, timeout=30)
    doc = json.loads(r.stdout)
    want = f"AVERAGE:vm:{uuid}:vif_{device}_rx"
    if want not in doc["meta"]["legend"]:
        return 0.0
    i = doc["meta"]["legend"].index(want)
    return max((float(row["values"][i]) for row in doc["data"]
                if float(row["values"][i]) == float(row["values"][i])), default=0.0)


def test_bridges_taps_dhcp_and_a_hot_plugged_nic(netns_agent, tmp_path):
    srv = netns_agent
    s = _session(srv)
    x = s.xenapi
    try:
        net, rec = next(iter(x.network.get_all_records().items()))
        bridge = rec["bridge"]
        vm = provision(x, "net1")
        x.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "", "MTU": "1400",
                      "other_config": {}, "qos_algorithm_type": "",
                      "qos_algorithm_params": {}})
        x.VM.start(vm, False, False)
        domid = x.VM.get_domid(vm)
        assert f"master {bridge}" in _in_netns(srv, "ip", "-o", "link", "show", f"vif{domid}.0")
        assert "mtu 1400" in _in_netns(srv, "ip", "-o", "link", "show", f"vif{domid}.0")

        def address(dev: str) -> str:
            gm = x.VM.get_guest_metrics(vm)
            if gm == "OpaqueRef:NULL":
                return ""
            return x.VM_guest_metrics.get_networks(gm).get(f"{dev}/ip", "")
        ip0 = until(lambda: address("0"), BOOT, "the guest's DHCP address")
        subnet = ip0.rsplit(".", 1)[0]
        assert subnet.startswith("10.213.")
        con = SerialConsole(srv, tmp_path / "home", "net1")
        try:
            con.login()
            assert "ok" in con.run(f"ping -c 1 -W 5 {subnet}.1 >/dev/null && echo ok", "ping")
            vif1 = x.VIF.create({"VM": vm, "network": net, "device": "1", "MAC": "",
                                 "MTU": "1500", "other_config": {}, "qos_algorithm_type": "",
                                 "qos_algorithm_params": {}})
            x.VIF.plug(vif1)
            ip1 = until(lambda: address("1"), 60, "the hot-plugged NIC's address")
            assert ip1.startswith(subnet + ".") and ip1 != ip0
            assert "eth1" in con.run("ls /sys/class/net", "ls")
        finally:
            con.close()
        until(lambda: _vif_rx(srv, x.VM.get_uuid(vm), "0") > 0, 60, "vif_0_rx to move")
        x.VM.hard_shutdown(vm)
        links = _in_netns(srv, "ip", "-o", "link", "show")
        assert f"vif{domid}.0" not in links and f"vif{domid}.1" not in links
    finally:
        s.xenapi.session.logout()


def test_a_guest_that_died_with_the_agent_down_leaves_no_tap(netns_agent):
    srv = netns_agent
    s = _session(srv)
    x = s.xenapi
    net = next(iter(x.network.get_all_records()))
    vm = provision(x, "net2")
    x.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    x.VM.start(vm, False, False)
    tap = f"vif{x.VM.get_domid(vm)}.0"
    assert tap in _in_netns(srv, "ip", "-o", "link", "show")
    pid = srv.qemu_pids()[x.VM.get_uuid(vm)]
    srv.kill9()
    os.kill(pid, 9)
    until(lambda: not Path(f"/proc/{pid}").exists(), 10, "QEMU to go")
    srv.start(timeout=120)
    s = _session(srv)
    try:
        assert s.xenapi.VM.get_power_state(vm) == "Halted"
        assert tap not in _in_netns(srv, "ip", "-o", "link", "show")
    finally:
        s.xenapi.session.logout()
