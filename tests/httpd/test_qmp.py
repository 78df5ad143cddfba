"""QMP: the sans-IO core on its own, then the asyncio client against a real QEMU."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest

from httpd.backends.qemu.qmp import (Greeting, LocalProtocolError, QmpConnection, QmpEvent,
                                     RemoteProtocolError, Reply)
from tests.httpd.test_qemu_guest import CACHE

GREETING = b'{"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": ["oob"]}}\n'


def test_the_handshake_then_commands_matched_by_id():
    c = QmpConnection()
    with pytest.raises(LocalProtocolError):
        c.command("query-status")                       # before the handshake
    events, out = c.receive(GREETING[:20])
    assert events == [] and out == b""
    events, out = c.receive(GREETING[20:])
    assert isinstance(events[0], Greeting) and events[0].version["qemu"]["major"] == 7
    assert json.loads(out) == {"execute": "qmp_capabilities", "id": 1}
    assert c.receive(b'{"return": {}, "id": 1}\n') == ([], b"") and c.state == "ready"
    a, data_a = c.command("query-status")
    b, data_b = c.command("stop")
    assert json.loads(data_b) == {"execute": "stop", "id": b}
    events, _ = c.receive(b'{"return": {}, "id": %d}\n{"timestamp": {"seconds": 1, '
                          b'"microseconds": 500000}, "event": "STOP"}\n'
                          b'{"return": {"status": "running"}, "id": %d}\n' % (b, a))
    assert events == [Reply(b, {}), QmpEvent("STOP", {}, 1.5), Reply(a, {"status": "running"})]
    events, _ = c.receive(b'{"error": {"class": "GenericError", "desc": "no"}, "id": %d}\n'
                          % c.command("cont")[0])
    assert not events[0].ok and events[0].error["desc"] == "no"


@pytest.mark.parametrize("line", [b"not json\n", b"[1]\n", b'{"return": {}, "id": 99}\n',
                                  b'{"id": 1}\n', b'{"something": "else"}\n'])
def test_what_is_not_qmp_is_a_remote_error_and_ends_the_connection(line):
    c = QmpConnection()
    c.receive(GREETING)
    c.receive(b'{"return": {}, "id": 1}\n')
    with pytest.raises(RemoteProtocolError):
        c.receive(line)
    with pytest.raises(LocalProtocolError):
        c.command("query-status")


def test_a_refused_handshake_and_a_line_without_end_are_remote_errors():
    c = QmpConnection()
    c.receive(GREETING)
    with pytest.raises(RemoteProtocolError, match="refused"):
        c.receive(b'{"error": {"class": "CommandNotFound", "desc": "x"}, "id": 1}\n')
    c = QmpConnection()
    with pytest.raises(RemoteProtocolError, match="longer"):
        c.receive(b"x" * (17 << 20))


async def test_the_client_drives_a_real_qemu(tmp_path):
    from httpd.backends.qemu.guest import build_initramfs, build_rootfs, fetch_kernel
    from httpd.backends.qemu.qmp import QmpError
    from httpd.backends.qemu.qmp_client import QmpClient

    kernel = await asyncio.to_thread(fetch_kernel, CACHE)
    initrd, root = tmp_path / "initrd.gz", tmp_path / "root.img"
    await asyncio.to_thread(build_initramfs, CACHE, initrd)
    await asyncio.to_thread(build_rootfs, root)
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-display", "none", "-no-reboot",
         "-serial", "null", "-monitor", "none", "-qmp", f"unix:{sock},server=on,wait=off",
         "-kernel", str(kernel), "-initrd", str(initrd), "-append", "console=ttyS0 quiet",
         "-drive", f"file={root},format=raw,if=virtio,id=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        seen: list[str] = []
        qmp = await QmpClient.connect(str(sock), on_event=lambda e: seen.append(e.name))
        assert qmp.version["qemu"]["major"] >= 7
        assert (await qmp.execute("query-status"))["status"] == "running"
        await qmp.execute("stop")
        assert (await qmp.execute("query-status"))["status"] == "paused"
        await qmp.execute("cont")
        stats = await qmp.execute("query-blockstats")
        assert any(s.get("qdev", "").endswith("virtio-backend") or s.get("device") == "root"
                   for s in stats), stats
        with pytest.raises(QmpError) as e:
            await qmp.execute("no-such-command")
        assert e.value.error_class == "CommandNotFound"
        await qmp.execute("quit")
        assert await asyncio.to_thread(proc.wait, 30) == 0
        for _ in range(100):
            if qmp.closed is not None:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(ConnectionError):
            await qmp.execute("query-status")
        assert seen[:2] == ["STOP", "RESUME"]
        await qmp.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
