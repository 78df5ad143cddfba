"""The simulated domain: boot text, a login shell on the vt100 stream, suspend/resume state."""

from __future__ import annotations

import asyncio

import pytest

from httpd.backends.base import DiskSpec, DomainConfig, NicSpec
from httpd.backends.simulated import SimulatedBackend, read_state


async def _read_until(reader: asyncio.StreamReader, text: str, timeout: float = 10.0) -> str:
    buf = b""
    async def loop():
        nonlocal buf
        while text.encode() not in buf:
            chunk = await reader.read(4096)
            if not chunk:
                raise AssertionError(f"EOF before {text!r}: {buf!r}")
            buf += chunk
    await asyncio.wait_for(loop(), timeout)
    return buf.decode()


@pytest.fixture
async def backend():
    events = []
    b = SimulatedBackend(events.append)
    b.events = events
    yield b
    await b.close()


async def test_boot_login_and_xenstore_vm_data(backend, tmp_path):
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * 4096)
    cfg = DomainConfig(uuid="u1", name="Guest One", disks=(DiskSpec("xvda", str(disk)),),
                       nics=(NicSpec("0", "02:00:00:00:00:01", 9000, (("ethtool-tso", "off"),)),),
                       vm_data=(("vm-data/foo", "bar"),),
                       boot_lines=("eliloader: install-round 1",))
    dom = await backend.start(cfg)
    assert dom.vnc_address is not None and dom.domid >= 1
    reader, writer = await asyncio.open_connection(*dom.vt100_address)
    boot = await _read_until(reader, "login: ")
    assert "eliloader: install-round 1" in boot and "mtu 9000 ethtool-tso=off" in boot
    writer.write(b"root\r")
    await _read_until(reader, "Password: ")
    writer.write(b"secret\r")
    await _read_until(reader, "# ")
    writer.write(b"xenstore-read vm-data/foo\r")
    assert "bar" in await _read_until(reader, "bar")
    writer.write(b"xenstore-read other/key\r")
    assert "couldn't read" in await _read_until(reader, "couldn't read")
    assert any(e.kind == "guest_metrics" for e in backend.events)
    assert dom.guest_report()["nics"] == ["0"]
    await asyncio.sleep(1.2)
    counters = dom.counters()
    assert counters.vbd["xvda"][0] > 0          # real reads of the disk file
    writer.close()


async def test_suspend_writes_state_and_resume_restores_screen(backend, tmp_path):
    cfg = DomainConfig(uuid="u2", name="sus")
    dom = await backend.start(cfg)
    reader, writer = await asyncio.open_connection(*dom.vt100_address)
    await _read_until(reader, "login: ")
    writer.close()
    state = tmp_path / "state"
    state.write_bytes(b"\0" * 2**20)
    await dom.suspend(str(state))
    assert backend.get("u2") is None
    saved = read_state(str(state))
    assert any("login:" in line for line in saved["screen"])
    dom2 = await backend.resume(cfg, str(state))
    assert any("login:" in line for line in dom2.console_text())
    with pytest.raises(ValueError):
        await backend.resume(DomainConfig(uuid="other", name="x"), str(state))
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\0" * 64)
    with pytest.raises(ValueError):
        await backend.resume(DomainConfig(uuid="u3", name="x"), str(garbage))


async def test_guest_halt_is_reported(backend):
    dom = await backend.start(DomainConfig(uuid="u4", name="h"))
    reader, writer = await asyncio.open_connection(*dom.vt100_address)
    await _read_until(reader, "login: ")
    writer.write(b"root\rpw\rhalt\r")
    await _read_until(reader, "going down")
    await asyncio.sleep(0.05)
    assert any(e.kind == "halt" and e.uuid == "u4" for e in backend.events)
    writer.close()
