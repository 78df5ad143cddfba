"""The SDK guide's chapter-6 CLI examples, run as a shell would run them (issue 8)."""

from __future__ import annotations

import subprocess
import time

from tests.xe.conftest import XE


def sh(xe, script: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", f"set -e; xe() {{ {' '.join(XE)} \"$@\"; }}\n{script}"],
                       env=xe.env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def _new_vm(xe, name: str) -> str:
    vm = xe.out("vm-install", 'template=Debian Etch 4.0', f"new-name-label={name}")
    net = xe.out("network-list", "params=uuid", "--minimal").split(",")[0]
    xe("vif-create", f"vm-uuid={vm}", f"network-uuid={net}", "device=0")
    return vm


def test_console_uri_and_disable_pv_vnc(xe):
    _new_vm(xe, "etch")
    r = sh(xe, """
uuid=$(xe vm-list params=uuid --minimal name-label=etch)
xe vm-start uuid=$uuid
xe console-list vm-uuid=$uuid
""")
    fields = {}
    for line in r.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.split("(")[0].strip(), []).append(value.strip())
    assert sorted(p.lower() for p in fields["protocol"]) == ["rfb", "vt100"]
    assert fields["vm-name-label"] == ["etch", "etch"]
    assert all("/console?uuid=" in loc for loc in fields["location"])
    vm = _new_vm(xe, "novnc")
    r = sh(xe, f"""
xe vm-param-set uuid={vm} other-config:disable_pv_vnc=1
xe vm-start uuid={vm}
xe vm-list params=dom-id uuid={vm} --minimal
xe console-list vm-uuid={vm} params=protocol --minimal
""")
    domid, protocols = r.stdout.split()[-2:]
    assert int(domid) > 0 and protocols.lower() == "vt100"
    xe("vm-shutdown", f"uuid={vm}", "--force")


def test_nic_settings_examples(xe):
    vm = _new_vm(xe, "nics")
    vif = xe.out("vif-list", f"vm-uuid={vm}", "params=uuid", "--minimal")
    pif = xe.out("pif-list", "params=uuid", "--minimal").split(",")[0]
    sh(xe, f"""
xe vif-param-set uuid={vif} other-config:ethtool-tx="on"
xe vif-param-set uuid={vif} other-config:ethtool-tx="true"
xe vif-param-set uuid={vif} other-config:ethtool-duplex="half"
xe vif-param-set uuid={vif} other-config:mtu=9000
""")
    if pif:
        sh(xe, f"""
xe pif-param-set uuid={pif} other-config:promiscuous="on"
xe pif-param-set uuid={pif} other-config:promiscuous="true"
""")
    oc = xe.out("vif-param-get", f"uuid={vif}", "param-name=other-config")
    assert "ethtool-tx: true" in oc and "ethtool-duplex: half" in oc and "mtu: 9000" in oc
    bad = sh(xe, f'xe vif-param-set uuid={vif} other-config:ethtool-speed="42"', check=False)
    assert bad.returncode != 0 and "ethtool-speed" in bad.stdout + bad.stderr
    assert "ethtool-speed" not in xe.out("vif-param-get", f"uuid={vif}",
                                         "param-name=other-config")
    xe("vm-start", f"uuid={vm}")
    assert xe.out("vif-param-get", f"uuid={vif}", "param-name=MTU") == "9000"
    xe("vm-shutdown", f"uuid={vm}", "--force")


def test_xenstore_vm_data_and_install_flow(xe):
    vm = _new_vm(xe, "xs")
    sh(xe, f"""
xe vm-param-set uuid={vm} xenstore-data:vm-data/foo=bar
xe vm-param-set uuid={vm} xenstore-data:other/ignored=x
xe vm-start uuid={vm}
""")
    deadline = time.time() + 20
    ip = ""
    while time.time() < deadline and not ip:
        ip = xe.out("vm-param-get", f"uuid={vm}", "param-name=networks", "param-key=0/ip") \
            if "0/ip" in xe.out("vm-param-get", f"uuid={vm}", "param-name=networks") else ""
        time.sleep(0.3)
    assert ip.startswith("10.213.")
    xe("vm-shutdown", f"uuid={vm}", "--force")


def test_sr_i18n_keys_survive_a_rename(xe):
    sr = xe.out("sr-list", "name-label=Local storage", "params=uuid", "--minimal")
    assert xe.out("sr-param-get", f"uuid={sr}", "param-name=other-config",
                  "param-key=i18n-key") == "local-storage"
    xe("sr-param-set", f"uuid={sr}", "name-label=My disks")
    assert xe.out("sr-param-get", f"uuid={sr}", "param-name=other-config",
                  "param-key=i18n-original-value-name_label") == "Local storage"
    xe("sr-param-set", f"uuid={sr}", "name-label=Local storage")
