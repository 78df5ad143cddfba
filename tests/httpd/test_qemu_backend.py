"""The QEMU backend (issue 16) with real clients: the agent runs real guests under
qemu-system-x86_64 (TCG here), and the SDK, `xe console`, vncdotool and curl drive them.

One agent serves the module (a guest boots in about 5 s under TCG). Every test ends what it
started; the module kills any QEMU of its data directory at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import XenAPI

from console_proxy import ConsoleForwarder
from httpd.backends.qemu.guest import fetch_kernel
from tests.failures import fails
from tests.server import Server
from tests.waiting import until
from tests.xe.conftest import XE, xe_env

from .test_console_screens import vnc_connect, vnc_api  # noqa: F401 - vnc_api is a fixture
from tests.console_proxy.conftest import vnc_capture, vnc_type

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "guest-kernel"
BOOT = 120          # seconds a TCG guest may take to reach its login prompt (it takes ~5)

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="qemu-system-x86 is not installed")


def qemu_server(data: Path, clean_timeout: int = 60) -> Server:
    """A started QEMU agent on `data` (a short path: QEMU's socket paths must fit), with the
    guest kernel `serve` would fetch itself copied from the tests' cache."""
    (data / "guest").mkdir()
    fetch_kernel(CACHE)
    shutil.copytree(CACHE, data / "guest" / "kernel")
    return Server(data, "--backend", "qemu", "--accel", "tcg", "--no-demo",
                  "--guest-network", "user",        # no bridge in the host's namespace
                  "--clean-shutdown-timeout", str(clean_timeout)).start(timeout=120)


@pytest.fixture(scope="module")
def qemu(tmp_path_factory):
    srv = qemu_server(tmp_path_factory.mktemp("q"))
    try:
        yield srv
    finally:
        srv.kill_domains()
        srv.stop()


@pytest.fixture
def api(qemu):
    """A session of this test (the agent's port changes when a test restarts it)."""
    url = qemu.url
    s = qemu.session()
    yield s
    if qemu.url == url:
        s.xenapi.session.logout()


def provision(x, name: str) -> str:
    """A VM made the guide's way: clone the Debian template and provision it."""
    template = x.VM.get_by_name_label("Debian Etch 4.0")[0]
    vm = x.VM.clone(template, name)
    x.VM.provision(vm)
    return vm


class SerialConsole:
    """`xe console vm=NAME`, the real client, on pipes: what the guest's serial port says,
    and keys typed at it."""

    def __init__(self, server: Server, home: Path, vm_name: str) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([*XE, "console", f"vm={vm_name}"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=xe_env(home, XE_SOCKET=server.socket_path))
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.seen = b""

    def expect(self, pattern: bytes, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read() or b""
            self.seen += chunk
            m = re.search(pattern, self.seen)
            if m:
                self.seen = self.seen[m.end():]
                return m
            if self.proc.poll() is not None and not chunk:
                break
            time.sleep(0.05)
        raise AssertionError(f"the console never showed {pattern!r}; it showed:\n"
                             f"{self.seen[-1500:].decode(errors='replace')}\n"
                             f"{(self.proc.stderr.read() or b'').decode(errors='replace')}")

    def type(self, text: str) -> None:
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def login(self) -> None:
        """Wait for the login prompt, log in as root (no password), wait for the shell."""
        self.type("\n")
        self.expect(rb"login: ", BOOT)
        self.type("root\n")
        self.expect(rb"# ", 30)

    def run(self, command: str, marker: str, timeout: float = 30) -> str:
        """Run `command` in the guest's shell; what it printed. Its output is found between
        two lines the shell computes ({marker}-41 and {marker}-42), so neither the echo of the
        typed line nor its wrapping at the terminal's width can be mistaken for it."""
        self.type(f"echo {marker}-$((40+1)); {command}; echo {marker}-$((40+2))\n")
        m = self.expect(rb"(?s)" + marker.encode() + rb"-41\r?\n(.*?)" + marker.encode()
                        + rb"-42", timeout)
        return m.group(1).decode(errors="replace").replace("\r", "")

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def guest_uptime(con: SerialConsole, tag: str) -> float:
    out = con.run("cut -d' ' -f1 /proc/uptime", tag)
    return float(re.findall(r"(\d+\.\d+)", out)[-1])


def test_the_walk_through_on_real_guests(qemu, api, tmp_path):
    """Clone, provision, start, suspend, resume, shutdown: a QEMU process exists exactly while
    the VM runs, suspend writes the guest's state into the suspend VDI, and the resumed guest
    is the same one (its uptime went on)."""
    x = api.xenapi
    vm = provision(x, "walk")
    uuid = x.VM.get_uuid(vm)
    assert qemu.qemu_pids() == {}
    x.VM.start(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    pid = qemu.qemu_pids()[uuid]
    assert Path(f"/proc/{pid}/exe").resolve().name.startswith("qemu-system")
    con = SerialConsole(qemu, tmp_path / "home", "walk")
    try:
        con.login()
        assert con.run("cat /etc/hostname", "host").strip().endswith("walk")
        before = guest_uptime(con, "up1")
        x.VM.suspend(vm)
        assert x.VM.get_power_state(vm) == "Suspended" and qemu.qemu_pids() == {}
        image = x.VM.get_suspend_VDI(vm)
        r = subprocess.run(f"curl -s -u root:{qemu.password} "
                           f"'{qemu.url}/export_raw_vdi?vdi={image}&format=raw' | head -c 4",
                           shell=True, capture_output=True, timeout=60)
        assert r.stdout == b"QEVM"               # a QEMU migration stream: the guest's state
    finally:
        con.close()
    time.sleep(2)
    x.VM.resume(vm, False, False)
    assert x.VM.get_power_state(vm) == "Running"
    con = SerialConsole(qemu, tmp_path / "home", "walk")
    try:
        con.type("\n")
        after = guest_uptime(con, "up2")          # the same shell: no login again
        assert before < after < before + 30, (before, after)
    finally:
        con.close()
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted"
    assert qemu.qemu_pids() == {}
    assert not (qemu.data_dir / "vm" / uuid).exists()
    # a clean shutdown right after the start, while the guest still boots (no acpid yet to
    # hear the first press of the power button): the button is pressed again until it halts
    x.VM.start(vm, False, False)
    x.VM.clean_shutdown(vm)
    assert x.VM.get_power_state(vm) == "Halted" and qemu.qemu_pids() == {}


def test_guest_poweroff_and_reboot_are_seen(qemu, api, tmp_path):
    """The guest's own `reboot` gives a new domid with the VM still Running; its `poweroff`
    makes the VM Halted (QMP events), each with an event for the record."""
    x = api.xenapi
    vm = provision(x, "self")
    x.VM.start(vm, False, False)
    domid = int(x.VM.get_domid(vm))
    con = SerialConsole(qemu, tmp_path / "home", "self")
    try:
        con.login()
        con.type("reboot\n")
        until(lambda: int(x.VM.get_domid(vm)) != domid, BOOT, "a new domid")
        assert x.VM.get_power_state(vm) == "Running"
        con.login()                               # the same console, a new boot
        token = x.event_from(["vm"], "", 0)["token"]
        con.type("poweroff\n")
        until(lambda: x.VM.get_power_state(vm) == "Halted", BOOT, "Halted")
        seen = x.event_from(["vm"], token, 5)["events"]
        assert any(e["ref"] == vm and e["snapshot"]["power_state"] == "Halted" for e in seen)
    finally:
        con.close()
    assert qemu.qemu_pids() == {}


async def test_vncdotool_sees_the_real_screen_and_types(qemu, api, vnc_api, tmp_path):
    """Through CONNECT /console: QEMU's own VGA screen (720x400 text mode), the login typed
    with vncdotool, and a command it typed seen running (it writes to the serial port)."""
    x = api.xenapi
    vm = await asyncio.to_thread(provision, x, "vnc")
    await asyncio.to_thread(x.VM.start, vm, False, False)
    uuid = x.VM.get_uuid(vm)
    con = SerialConsole(qemu, tmp_path / "home", "vnc")
    forwarder = ConsoleForwarder(f"{qemu.url}/console?uuid={uuid}", session_id=api._session)
    await forwarder.start()
    try:
        await asyncio.to_thread(con.login)     # booted: tty1 is in VGA text mode by now
        client = await asyncio.to_thread(vnc_connect, vnc_api, forwarder.port)
        try:
            img = await vnc_capture(client)
            assert img.shape == (400, 720, 3)       # 80x25 text mode (firmware: 640x480)
            lit = np.any(img > 100, axis=2)
            assert lit.any() and lit.mean() < 0.5     # text on a dark screen
            # Keys without shift (the keymap). getty and login flush what was typed before
            # they asked, so log in and type the command until it ran (a shell that gets
            # "root" again just says it is no command).
            for _ in range(20):
                await vnc_type(client, "root\r")
                await asyncio.sleep(2)
                await vnc_type(client, "hostname vgatyped\r")
                if "vgatyped" in await asyncio.to_thread(con.run, "hostname", "hn"):
                    break
            else:
                raise AssertionError("the command typed on the VGA console never ran")
            await vnc_type(client, "clear\r")
            await asyncio.sleep(2)
            cleared = await vnc_capture(client)
            assert np.any(cleared > 100, axis=2).mean() < lit.mean()
        finally:
            await asyncio.to_thread(client.disconnect)
    finally:
        await forwarder.stop()
        con.close()
        await asyncio.to_thread(x.VM.hard_shutdown, vm)
    assert not forwarder.failures


def test_kill9_of_the_agent_keeps_both_guests(qemu, api, tmp_path):
    x = api.xenapi
    vms = [provision(x, name) for name in ("k1", "k2")]
    for vm in vms:
        x.VM.start(vm, False, False)
    pids = qemu.qemu_pids()
    assert len(pids) == 2
    qemu.kill9()
    assert qemu.qemu_pids() == pids                 # the guests run on without the agent
    qemu.start(timeout=120)
    s = qemu.session()
    try:
        x = s.xenapi
        for vm in vms:
            assert x.VM.get_power_state(vm) == "Running"
        assert qemu.qemu_pids() == pids             # found again, not restarted
        for name in ("k1", "k2"):
            con = SerialConsole(qemu, tmp_path / name, name)
            try:
                con.login()
                assert con.run("hostname", "hn").strip().endswith(name)
            finally:
                con.close()
        for vm in vms:
            x.VM.hard_shutdown(vm)
    finally:
        s.xenapi.session.logout()
    assert qemu.qemu_pids() == {}


def test_a_guest_whose_qemu_died_while_the_agent_was_down_comes_back_halted(qemu, api):
    x = api.xenapi
    vm = provision(x, "dies")
    x.VM.start(vm, False, False)
    pid = qemu.qemu_pids()[x.VM.get_uuid(vm)]
    qemu.kill9()
    os.kill(pid, 9)
    until(lambda: not Path(f"/proc/{pid}").exists(), 10, "QEMU to go")
    qemu.start(timeout=120)
    s = qemu.session()
    try:
        assert s.xenapi.VM.get_power_state(vm) == "Halted"
        # and says so where people look: a VM_CRASHED message (priority 2, as xapi's)
        said = s.xenapi.message.get("VM", s.xenapi.VM.get_uuid(vm), "19700101T00:00:00Z")
        assert [(m["name"], m["priority"]) for m in said.values()] == [("VM_CRASHED", "2")]
        assert "could not be found again" in next(iter(said.values()))["body"]
    finally:
        s.xenapi.session.logout()


def test_start_failures_leave_nothing_running(qemu, api, tmp_path):
    x = api.xenapi
    vm = provision(x, "fails")
    x.VM.set_PV_bootloader(vm, "")
    x.VM.set_PV_kernel(vm, "/nonexistent/vmlinuz")
    fails("BOOTLOADER_FAILED", x.VM.start, vm, False, False)
    x.VM.set_PV_bootloader(vm, "pygrub")
    big = str(1 << 40)
    x.VM.set_memory_limits(vm, big, big, big, big)
    fails("HOST_NOT_ENOUGH_FREE_MEMORY", x.VM.start, vm, False, False)
    small = str(256 << 20)
    x.VM.set_memory_limits(vm, small, small, small, small)
    blank = x.VDI.create({"SR": x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])),
                          "virtual_size": str(64 << 20), "type": "user", "sharable": False,
                          "read_only": False, "other_config": {}, "name_label": "blank"})
    other = x.VM.clone(x.VM.get_by_name_label("Debian Etch 4.0")[0], "blank-disk")
    x.VBD.create({"VM": other, "VDI": blank, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
                  "qos_algorithm_params": {}})
    x.VM.set_is_a_template(other, False)
    fails("BOOTLOADER_FAILED", x.VM.start, other, False, False)   # no file system on it
    for v in (vm, other):
        assert x.VM.get_power_state(v) == "Halted"
    assert qemu.qemu_pids() == {}


def _rrd_column(qemu, uuid: str, name: str, since: int) -> float | None:
    """The largest value of one column of the VM's /rrd_updates (5 s rows) since `since`;
    None while the column does not exist yet."""
    r = subprocess.run(["curl", "-sf", "-u", f"root:{qemu.password}",
                        f"{qemu.url}/rrd_updates?start={since}&cf=AVERAGE&interval=5"
                        f"&vm_uuid={uuid}&json=true"], capture_output=True, timeout=30)
    doc = json.loads(r.stdout)
    legend = doc["meta"]["legend"]
    want = f"AVERAGE:vm:{uuid}:{name}"
    if want not in legend:
        return None
    i = legend.index(want)
    values = [float(row["values"][i]) for row in doc["data"]]
    return max((v for v in values if v == v), default=0.0)       # NaN: not known yet


def test_a_hot_plugged_disk_appears_in_the_guest_and_its_writes_in_the_statistics(
        qemu, api, tmp_path):
    x = api.xenapi
    vm = provision(x, "plug")
    x.VM.start(vm, False, False)
    uuid = x.VM.get_uuid(vm)
    sr = x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]))
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(32 << 20), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {},
                        "name_label": "scratch"})
    vbd = x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "1", "bootable": False,
                        "mode": "RW", "type": "Disk", "empty": False, "other_config": {},
                        "qos_algorithm_type": "", "qos_algorithm_params": {}})
    con = SerialConsole(qemu, tmp_path / "home", "plug")
    try:
        con.login()
        assert "vdb" not in con.run("ls /sys/block", "ls1")
        since = int(time.time())
        x.VBD.plug(vbd)
        until(lambda: "vdb" in con.run("ls /sys/block", "ls2"), 60, "vdb in the guest")
        # the disk's data sources start at the collection after the plug; then the guest writes
        until(lambda: _rrd_column(qemu, uuid, "vbd_xvdb_write", since) is not None, 30,
               "a vbd_xvdb_write column")
        time.sleep(6)
        con.run("dd if=/dev/urandom of=/dev/vdb bs=1M count=4 conv=fsync 2>&1", "dd", 120)
        until(lambda: (_rrd_column(qemu, uuid, "vbd_xvdb_write", since) or 0) > 0, 60,
               "vbd_xvdb_write to move")
        x.VBD.unplug(vbd)
        until(lambda: "vdb" not in con.run("ls /sys/block", "ls3"), 60, "vdb to go")
    finally:
        con.close()
        x.VM.hard_shutdown(vm)
    # what the guest wrote is in the VDI
    r = subprocess.run(f"curl -s -u root:{qemu.password} "
                       f"'{qemu.url}/export_raw_vdi?vdi={vdi}&format=raw' | head -c 4194304 "
                       f"| tr -d '\\000' | wc -c", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert int(r.stdout) > 4_000_000


def test_an_exported_guest_imported_boots_to_the_same_login(qemu, api, tmp_path):
    x = api.xenapi
    vm = provision(x, "exported")
    xva = tmp_path / "exported.xva"
    subprocess.run(["curl", "-sf", "-u", f"root:{qemu.password}", "-o", str(xva),
                    f"{qemu.url}/export?uuid={x.VM.get_uuid(vm)}"], check=True, timeout=300)
    x.VM.destroy(vm)
    r = subprocess.run(["curl", "-sf", "-u", f"root:{qemu.password}", "-T", str(xva),
                        f"{qemu.url}/import"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    copy = x.VM.get_by_name_label("exported")[0]
    x.VM.start(copy, False, False)
    con = SerialConsole(qemu, tmp_path / "home", "exported")
    try:
        con.login()
        assert con.run("hostname", "hn").strip().endswith("exported")
    finally:
        con.close()
        x.VM.hard_shutdown(copy)


def test_a_disc_inserted_into_a_running_guests_cd_drive_is_read_and_ejected(
        qemu, api, tmp_path):
    x = api.xenapi
    vm = provision(x, "cdrom")
    sr = x.VDI.get_SR(x.VBD.get_VDI(x.VM.get_VBDs(vm)[0]))
    cd = x.VBD.create({"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                       "bootable": False, "mode": "RO", "type": "CD", "empty": True,
                       "other_config": {}, "qos_algorithm_type": "",
                       "qos_algorithm_params": {}})
    disc = tmp_path / "disc.iso"
    disc.write_bytes(b"XCP-DISC-MARK" + bytes(2 * 2**20 - 13))
    iso = x.VDI.create({"SR": sr, "virtual_size": str(2 * 2**20), "type": "user",
                        "sharable": False, "read_only": False, "other_config": {},
                        "name_label": "disc"})
    subprocess.run(["curl", "-sf", "-u", f"root:{qemu.password}", "-T", str(disc),
                    f"{qemu.url}/import_raw_vdi?vdi={iso}&format=raw"], check=True, timeout=60)
    x.VM.start(vm, False, False)
    assert x.VBD.get_currently_attached(cd)              # an empty drive is attached
    con = SerialConsole(qemu, tmp_path / "home", "cdrom")
    read = "dd if=/dev/sr0 bs=2048 count=1 2>&1 | head -c 13"
    try:
        con.login()
        until(lambda: "sr0" in con.run("ls /sys/block", "ls"), 30, "the CD drive")
        assert "XCP-DISC-MARK" not in con.run(read, "r1")
        x.VBD.insert(cd, iso)
        until(lambda: "XCP-DISC-MARK" in con.run(read, "r2"), 30, "the disc to be read")
        x.VBD.eject(cd)
        until(lambda: "XCP-DISC-MARK" not in con.run(read, "r3"), 30, "the disc to go")
        assert x.VBD.get_empty(cd)
    finally:
        con.close()
        x.VM.hard_shutdown(vm)


# A boot sector (for the test only): print HVM-BOOT-OK on COM1, then halt.
#   xor ax,ax; mov ds,ax; mov si,msg; mov dx,0x3f8
#   next: lodsb; test al,al; jz done; out dx,al; jmp next
#   done: cli; hlt; jmp $
_MBR_CODE = bytes.fromhex("31c08ed8be167cbaf803ac84c07403eeebf8faf4ebfe") + b"HVM-BOOT-OK\0"


def _mbr_vm(x, srv: Server, tmp_path: Path, name: str) -> str:
    """An HVM VM whose disk holds _MBR_CODE: it prints HVM-BOOT-OK and halts (and so ignores
    the ACPI power button: there is no OS to hear it)."""
    vm = x.VM.clone(x.VM.get_by_name_label("Other install media")[0], name)
    x.VM.set_is_a_template(vm, False)
    assert x.VM.get_HVM_boot_policy(vm) == "BIOS order"
    sr = x.SR.get_by_name_label("Local storage")[0]
    disk = tmp_path / "mbr.raw"
    disk.write_bytes(_MBR_CODE.ljust(510, b"\0") + b"\x55\xaa" + bytes(2**20 - 512))
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(2**20), "type": "system",
                        "sharable": False, "read_only": False, "other_config": {},
                        "name_label": "boot sector"})
    subprocess.run(["curl", "-sf", "-u", f"root:{srv.password}", "-T", str(disk),
                    f"{srv.url}/import_raw_vdi?vdi={vdi}&format=raw"], check=True, timeout=60)
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "empty": False, "other_config": {}, "qos_algorithm_type": "",
                  "qos_algorithm_params": {}})
    return vm


def _boots_the_sector(x, srv: Server, tmp_path: Path, vm: str, name: str) -> None:
    """Start `vm`, see _MBR_CODE's HVM-BOOT-OK on its serial console, stop it."""
    x.VM.start(vm, False, False)
    con = SerialConsole(srv, tmp_path / "home", name)
    try:
        con.expect(rb"HVM-BOOT-OK", BOOT)
    finally:
        con.close()
        x.VM.hard_shutdown(vm)


def test_an_hvm_guest_boots_from_its_disk_through_the_bios(qemu, api, tmp_path):
    x = api.xenapi
    _boots_the_sector(x, qemu, tmp_path, _mbr_vm(x, qemu, tmp_path, "hvm"), "hvm")


def test_the_small_busybox_template_provisions_a_bootable_guest(qemu, api, tmp_path):
    x = api.xenapi
    vm = x.VM.clone(x.VM.get_by_name_label("Linux (busybox)")[0], "tiny")
    x.VM.provision(vm)
    disk = x.VBD.get_VDI(x.VM.get_VBDs(vm)[0])
    assert int(x.VDI.get_virtual_size(disk)) == 256 * 2**20
    x.VM.start(vm, False, False)
    con = SerialConsole(qemu, tmp_path / "home", "tiny")
    try:
        con.login()
        assert "xcp-httpd busybox guest" in con.run("cat /etc/guest-os", "os")
    finally:
        con.close()
        x.VM.clean_shutdown(vm)


async def test_a_failed_suspend_leaves_the_guest_running():
    """The migration stream cannot be written (no such directory): the call fails with a
    XenAPI error and the guest, stopped for the save, runs on."""
    from uuid import uuid4

    from httpd.backends.base import DiskSpec, DomainConfig
    from httpd.backends.qemu.backend import QemuBackend
    from httpd.backends.qemu.guest import build_initramfs, build_rootfs
    from httpd.model.errors import XenAPIError

    kernel = await asyncio.to_thread(fetch_kernel, CACHE)
    with tempfile.TemporaryDirectory(prefix="qs", dir="/tmp") as d:   # short socket paths
        work = Path(d)
        (work / "sockets").mkdir()
        await asyncio.to_thread(shutil.copytree, CACHE, work / "guest" / "kernel")
        initrd, root = work / "initrd.gz", work / "root.img"
        await asyncio.to_thread(build_initramfs, CACHE, initrd)
        await asyncio.to_thread(build_rootfs, root)
        backend = QemuBackend(lambda event: None, data_dir=work, socket_dir=work / "sockets",
                              accel="tcg", network="user")
        await backend.open()
        dom = await backend.start(DomainConfig(
            uuid=str(uuid4()), name="s", memory=256 * 2**20, kernel=str(kernel),
            ramdisk=str(initrd), kernel_args="console=ttyS0 quiet",
            disks=(DiskSpec("xvda", str(root)),)))
        try:
            with pytest.raises(XenAPIError, match="saving the domain's state failed"):
                await dom.suspend(str(work / "no-such-dir" / "state"))
            assert (await dom._qmp("query-status"))["status"] == "running"
            assert not dom.paused
        finally:
            await dom.shutdown(clean=False)
            await backend.close()


def test_a_guest_that_ignores_the_power_button_fails_the_clean_shutdown_in_time(
        tmp_path, tmp_path_factory):
    """--clean-shutdown-timeout: a guest that never powers off (here a boot sector that
    halts) fails VM.clean_shutdown with VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT once the time is
    up, still running; a hard shutdown then stops it."""
    srv = qemu_server(tmp_path_factory.mktemp("d"), clean_timeout=6)
    try:
        x = srv.session().xenapi
        vm = _mbr_vm(x, srv, tmp_path, "deaf")
        x.VM.start(vm, False, False)
        con = SerialConsole(srv, tmp_path / "home", "deaf")
        try:
            con.expect(rb"HVM-BOOT-OK", BOOT)          # it is in its hlt loop now
        finally:
            con.close()
        with pytest.raises(XenAPI.Failure) as e:
            x.VM.clean_shutdown(vm)
        assert e.value.details[0] == "VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT"
        assert x.VM.get_power_state(vm) == "Running" and srv.qemu_pids()
        x.VM.hard_shutdown(vm)
        assert x.VM.get_power_state(vm) == "Halted" and srv.qemu_pids() == {}
    finally:
        srv.kill_domains()
        srv.stop()


def test_platform_flags_reach_the_guest(qemu, api, tmp_path):
    """VM.platform's cores-per-socket is the guest's CPU topology; vga, videoram, usb_tablet
    and hpet go to QEMU (which accepts them: the guest boots to its login)."""
    x = api.xenapi
    vm = provision(x, "plat")
    x.VM.set_VCPUs_max(vm, "2")
    x.VM.set_VCPUs_at_startup(vm, "2")
    x.VM.set_platform(vm, {"cores-per-socket": "2", "vga": "cirrus", "videoram": "8",
                           "usb_tablet": "1", "hpet": "0"})
    x.VM.start(vm, False, False)
    try:
        pid = qemu.qemu_pids()[x.VM.get_uuid(vm)]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"cirrus" in cmdline and b"usb-tablet" in cmdline
        assert b"2,sockets=1,cores=2" in cmdline
        con = SerialConsole(qemu, tmp_path / "home", "plat")
        try:
            con.login()
            assert con.run("grep -c ^processor /proc/cpuinfo", "cpus").strip() == "2"
            cores = con.run("grep -m1 'cpu cores' /proc/cpuinfo", "cores")
            assert cores.split(":")[-1].strip() == "2", cores
        finally:
            con.close()
    finally:
        x.VM.hard_shutdown(vm)


def test_an_hvm_guest_boots_from_its_cd_through_the_bios(qemu, api, tmp_path):
    """HVM_boot_params order=d: the BIOS boots the ISO in the CD drive (an El Torito image
    made by xorriso, holding the boot sector of the disk test)."""
    if shutil.which("xorriso") is None:
        pytest.fail("xorriso is not installed (make test installs it)")
    x = api.xenapi
    isos = tmp_path / "isos"
    tree = tmp_path / "tree"
    isos.mkdir()
    tree.mkdir()
    (tree / "boot.img").write_bytes(_MBR_CODE.ljust(2048, b"\0"))
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(isos / "boot.iso"),
                    "-b", "boot.img", "-no-emul-boot", "-boot-load-size", "4", str(tree)],
                   check=True, timeout=60, capture_output=True)
    host = x.host.get_all()[0]
    sr = x.SR.create(host, {"path": str(isos)}, "0", "boot ISOs", "", "iso", "iso", False, {})
    vm = x.VM.clone(x.VM.get_by_name_label("Other install media")[0], "hvm-cd")
    try:
        x.SR.scan(sr)
        iso = x.VDI.get_by_name_label("boot.iso")[0]
        x.VM.set_is_a_template(vm, False)
        x.VM.set_HVM_boot_params(vm, {"order": "d"})
        x.VBD.create({"VM": vm, "VDI": iso, "userdevice": "3", "bootable": True, "mode": "RO",
                      "type": "CD", "empty": False, "other_config": {},
                      "qos_algorithm_type": "", "qos_algorithm_params": {}})
        _boots_the_sector(x, qemu, tmp_path, vm, "hvm-cd")
    finally:
        for vbd in x.VM.get_VBDs(vm):
            x.VBD.destroy(vbd)
        x.VM.destroy(vm)
        x.SR.forget(sr)


def test_the_balloon_reports_the_guests_free_memory(qemu, api, tmp_path):
    """With the guest agent stopped, the VM's memory_internal_free still follows the guest:
    its virtio balloon driver reports free memory to QEMU, which the agent reads."""
    x = api.xenapi
    vm = provision(x, "balloon")
    x.VM.start(vm, False, False)

    def free_kib() -> float:
        try:
            return float(x.VM.query_data_source(vm, "memory_internal_free"))
        except XenAPI.Failure as e:     # as xapi: no such data source before its first figure
            if "Invalid_data_source" not in str(e.details):
                raise
            return 0.0

    con = SerialConsole(qemu, tmp_path / "home", "balloon")
    try:
        con.login()
        assert "virtio" in con.run("ls /sys/bus/virtio/drivers/virtio_balloon", "drv")
        con.run("killall xcp-guest-agent; mkdir -p /mnt/t; mount -t tmpfs -o size=128m t /mnt/t",
                "quiet")
        until(lambda: free_kib() > 0, 60, "a first free-memory figure")
        before = free_kib()
        con.run("dd if=/dev/zero of=/mnt/t/fill bs=1M count=64 2>/dev/null", "fill")
        until(lambda: free_kib() < before - 48 * 1024, 60,
              "the balloon's free memory to drop by the 64 MiB written to tmpfs")
    finally:
        con.close()
        x.VM.hard_shutdown(vm)
