"""Chapter 6 and guest metrics: what other_config / xenstore_data keys change (issue 8)."""

from __future__ import annotations

import time

import pytest
import XenAPI


def _template(x, name="Debian Etch 4.0"):
    return next(r for r, v in x.VM.get_all_records().items() if v["name_label"] == name)


def _wait_for_ip(x, vm, device="0", timeout=20.0):
    """The guide's install flow: after start, wait through event.from for the IP."""
    token = x.event_from(["vm", "vm_guest_metrics"], "", 0.0)["token"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        gm = x.VM.get_guest_metrics(vm)
        if gm != "OpaqueRef:NULL":
            ip = x.VM_guest_metrics.get_networks(gm).get(f"{device}/ip")
            if ip:
                return ip
        token = x.event_from(["vm", "vm_guest_metrics"], token, 5.0)["token"]
    raise AssertionError("no IP reported")


def test_install_flow_waits_for_ip(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "install-flow")
    x.VM.provision(vm)
    net = x.network.get_all()[0]
    x.VIF.create({"VM": vm, "network": net, "device": "0", "MAC": "", "other_config": {}})
    x.VM.start(vm, False, False)
    try:
        ip = _wait_for_ip(x, vm)
        assert ip.startswith("10.213.")
        gm = x.VM_guest_metrics.get_record(x.VM.get_guest_metrics(vm))
        assert gm["os_version"]["distro"] == "debian" and gm["PV_drivers_up_to_date"]
        assert int(gm["memory"]["total"]) > 0
        # a hot-plugged NIC gets an address too
        vif2 = x.VIF.create({"VM": vm, "network": net, "device": "1", "MAC": "",
                             "other_config": {}})
        x.VIF.plug(vif2)
        ip2 = _wait_for_ip(x, vm, "1")
        assert ip2 != ip
        gm_ref = x.VM.get_guest_metrics(vm)
    finally:
        x.VM.hard_shutdown(vm)
    assert x.VM.get_guest_metrics(vm) == "OpaqueRef:NULL"
    with pytest.raises(XenAPI.Failure) as e:
        x.VM_guest_metrics.get_record(gm_ref)
    assert e.value.details[0] == "HANDLE_INVALID"


def test_disable_pv_vnc_means_no_rfb_console(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "novnc")
    x.VM.provision(vm)
    x.VM.add_to_other_config(vm, "disable_pv_vnc", "1")
    x.VM.start(vm, False, False)
    try:
        assert [x.console.get_protocol(c) for c in x.VM.get_consoles(vm)] == ["vt100"]
    finally:
        x.VM.hard_shutdown(vm)


def test_installer_template_needs_a_repository(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x, "CentOS 5 (64-bit)"), "installer")
    x.VM.provision(vm)
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.start(vm, False, False)
    assert e.value.details[0] == "OPERATION_NOT_ALLOWED"
    assert "install-repository" in e.value.details[1]
    assert x.VM.get_power_state(vm) == "Halted"


@pytest.mark.parametrize("key,bad", [("ethtool-tso", "maybe"), ("ethtool-speed", "42"),
                                     ("ethtool-duplex", "double"), ("promiscuous", "yes"),
                                     ("mtu", "big"), ("mtu", "10")])
def test_nic_keys_refuse_invalid_values(xenapi, key, bad):
    x = xenapi.xenapi
    vm = x.VM.get_by_name_label("demo")[0]
    vif = x.VM.get_VIFs(vm)[0]
    pif = x.PIF.get_all()[0] if x.PIF.get_all() else None
    before = x.VIF.get_other_config(vif)
    with pytest.raises(XenAPI.Failure) as e:
        x.VIF.add_to_other_config(vif, key, bad)
    assert e.value.details == ["INVALID_VALUE", key, bad]
    with pytest.raises(XenAPI.Failure) as e:
        x.VIF.set_other_config(vif, {**before, key: bad})
    assert e.value.details == ["INVALID_VALUE", key, bad]
    assert x.VIF.get_other_config(vif) == before
    if pif:
        with pytest.raises(XenAPI.Failure) as e:
            x.PIF.add_to_other_config(pif, key, bad)
        assert e.value.details[0] == "INVALID_VALUE"
    with pytest.raises(XenAPI.Failure) as e:
        x.VIF.create({"VM": vm, "network": x.network.get_all()[0], "device": "7",
                      "other_config": {key: bad}})
    assert e.value.details[0] == "INVALID_VALUE"


def test_nic_keys_are_applied_on_plug(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x), "nic-keys")
    x.VM.provision(vm)
    vif = x.VIF.create({"VM": vm, "network": x.network.get_all()[0], "device": "0",
                        "other_config": {"ethtool-tso": "false", "mtu": "9000"}})
    x.VIF.add_to_other_config(vif, "ethtool-speed", "1000")
    net_mtu = x.network.get_MTU(x.VIF.get_network(vif))
    assert x.VIF.get_MTU(vif) == net_mtu          # applied on plug, not on set
    x.VM.start(vm, False, False)
    try:
        assert x.VIF.get_MTU(vif) == "9000"
    finally:
        x.VM.hard_shutdown(vm)
    for pif in x.PIF.get_all()[:1]:
        x.PIF.add_to_other_config(pif, "mtu", "1400")
        assert x.PIF.get_MTU(pif) == "1400"


def test_eliloader_rounds(xenapi):
    x = xenapi.xenapi
    vm = x.VM.clone(_template(x, "CentOS 5 (64-bit)"), "centos")
    x.VM.provision(vm)
    x.VM.add_to_other_config(vm, "install-repository", "cdrom-or-whatever")
    with pytest.raises(XenAPI.Failure) as e:
        x.VM.start(vm, False, False)
    assert e.value.details == ["INVALID_VALUE", "install-repository", "cdrom-or-whatever"]
    x.VM.remove_from_other_config(vm, "install-repository")
    x.VM.add_to_other_config(vm, "install-repository", "http://mirror.example/centos/5/os/x86_64")
    x.VM.add_to_other_config(vm, "install-vnc", "true")
    assert x.VM.get_PV_bootloader(vm) == "eliloader"
    x.VM.start(vm, False, False)
    try:
        oc = x.VM.get_other_config(vm)
        assert oc["install-round"] == "2" and x.VM.get_PV_bootloader(vm) == "pygrub"
    finally:
        x.VM.hard_shutdown(vm)
