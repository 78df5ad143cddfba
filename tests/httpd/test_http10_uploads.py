"""Issue 20: uploads framed by the connection's end (HTTP/1.0 without Content-Length, or an
HTTP/1.1 client that half-closes), read as xapi reads them, with raw sockets and curl."""

from __future__ import annotations

import base64
import os
import socket
import subprocess

import pytest


def _put(server, target: str, body: bytes, version: str = "1.0") -> tuple[int, str, bytes]:
    """A PUT whose body ends where the client shuts its side: no Content-Length, no chunks."""
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", server.port)) as c:
        c.sendall(f"PUT {target} HTTP/{version}\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
        view = memoryview(body)
        for i in range(0, len(view), 1 << 16):
            c.sendall(view[i:i + (1 << 16)])
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := c.recv(1 << 16):
            reply += chunk
    head, _, text = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return int(lines[0].split()[1]), "\n".join(lines[1:]), text


@pytest.fixture
def x(server):
    return server.session().xenapi


def _vdi(x, size: int, data: bytes = b"") -> str:
    sr = x.pool.get_default_SR(x.pool.get_all()[0])
    vdi = x.VDI.create({"SR": sr, "virtual_size": str(size), "type": "user",
                        "name_label": "http10"})
    if data:
        with open(_path(x, vdi), "r+b") as f:
            f.write(data)
    return vdi


def _path(x, vdi: str) -> str:
    pbd = x.SR.get_PBDs(x.VDI.get_SR(vdi))[0]
    return os.path.join(x.PBD.get_device_config(pbd)["path"], x.VDI.get_location(vdi) + ".raw")


def _task(x, headers: str) -> dict:
    ref = next(line.split(": ", 1)[1] for line in headers.split("\n")
               if line.lower().startswith("task-id:"))
    return x.task.get_record(ref)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_raw_vdi_upload_until_close(server, x, version):
    size = 4 * 2**20
    vdi = _vdi(x, size)
    data = os.urandom(size)
    status, headers, text = _put(server, f"/import_raw_vdi?vdi={vdi}", data, version)
    assert status == 200, text
    assert open(_path(x, vdi), "rb").read() == data
    assert _task(x, headers)["status"] == "success"
    x.VDI.destroy(vdi)


def test_vhd_upload_until_close(server, x, tmp_path):
    size = 4 * 2**20
    src = tmp_path / "d.raw"
    data = bytearray(size)
    data[2**20:2**20 + 5000] = os.urandom(5000)
    src.write_bytes(data)
    vhd = tmp_path / "d.vhd"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on",
                    str(src), str(vhd)], check=True)
    vdi = _vdi(x, size, b"old")
    status, _, text = _put(server, f"/import_raw_vdi?vdi={vdi}&format=vhd", vhd.read_bytes())
    assert status == 200, text
    assert open(_path(x, vdi), "rb").read() == bytes(data)   # block 0 holds data: written whole
    x.VDI.destroy(vdi)


def test_xva_and_metadata_uploads_until_close(server, x, tmp_path):
    vm = x.VM.create({"name_label": "http10-source", "memory_static_max": str(2**28)})
    disk = _vdi(x, 2 * 2**20, os.urandom(100_000))
    x.VBD.create({"VM": vm, "VDI": disk, "userdevice": "0", "mode": "RW", "type": "Disk"})
    url = server.url.replace("http://", f"http://root:{server.password}@")
    xva = tmp_path / "vm.xva"
    subprocess.run(["curl", "-sSf", "-o", str(xva), f"{url}/export?uuid={x.VM.get_uuid(vm)}"],
                   check=True)
    status, headers, text = _put(server, "/import", xva.read_bytes())
    assert status == 200, text
    (new,) = text.decode().split()
    (vbd,) = x.VM.get_VBDs(new)
    assert open(_path(x, x.VBD.get_VDI(vbd)), "rb").read() == open(_path(x, disk), "rb").read()
    assert _task(x, headers)["status"] == "success"
    meta = tmp_path / "meta.xva"
    subprocess.run(["curl", "-sSf", "-o", str(meta),
                    f"{url}/export_metadata?uuid={x.VM.get_uuid(vm)}"], check=True)
    status, _, text = _put(server, "/import_metadata", meta.read_bytes())
    assert status == 200, text
    (again,) = text.decode().split()
    assert x.VM.get_name_label(again) == "http10-source"
    for ref in (again, new):
        for b in x.VM.get_VBDs(ref):
            if ref == new:
                x.VDI.destroy(x.VBD.get_VDI(b))
            else:
                x.VBD.destroy(b)
        x.VM.destroy(ref)
    x.VDI.destroy(disk)
    x.VM.destroy(vm)


def test_curl_http10_from_a_pipe(server, x):
    """curl itself will not send an unknown-length body over HTTP/1.0 (`-T -`: "Chunky upload
    is not supported by HTTP 1.0"); from a pipe it reads the body first (`--data-binary @-`)
    and sends its length."""
    size = 2 * 2**20
    vdi = _vdi(x, size)
    data = os.urandom(size)
    url = server.url.replace("http://", f"http://root:{server.password}@")
    r = subprocess.run(["curl", "-sS", "--http1.0", "-X", "PUT", "--data-binary", "@-",
                        "-H", "Content-Type: application/octet-stream", "-w", "\n%{http_code}",
                        f"{url}/import_raw_vdi?vdi={vdi}"], input=data, capture_output=True)
    assert r.stdout.endswith(b"200"), r.stdout + r.stderr
    assert open(_path(x, vdi), "rb").read() == data
    r = subprocess.run(["curl", "-sS", "--http1.0", "-T", "-", f"{url}/import_raw_vdi?vdi={vdi}"],
                       input=data, capture_output=True)
    assert r.returncode == 25 and b"HTTP 1.0" in r.stderr         # curl's own refusal
    x.VDI.destroy(vdi)


@pytest.mark.parametrize("target", ["/import_raw_vdi?vdi={vdi}", "/import_raw_vdi?vdi={vdi}&format=vhd",
                                    "/import", "/import_metadata"])
def test_an_empty_or_short_body_fails_and_changes_nothing(server, x, target):
    size = 2 * 2**20
    old = os.urandom(size)
    vdi = _vdi(x, size, old)
    vms = sorted(x.VM.get_all())
    status, headers, text = _put(server, target.format(vdi=vdi), b"")
    assert status == 400 and b"IMPORT_ERROR_PREMATURE_EOF" in text, text
    rec = _task(x, headers)
    assert rec["status"] == "failure" and rec["error_info"][0] == "IMPORT_ERROR_PREMATURE_EOF"
    if "raw" in target and "vhd" not in target:        # and a raw body short of the disk
        status, headers, text = _put(server, target.format(vdi=vdi), os.urandom(size // 2))
        assert status == 400 and b"of the disk's" in text, text
    assert open(_path(x, vdi), "rb").read() == old and sorted(x.VM.get_all()) == vms
    x.VDI.destroy(vdi)


def test_an_http11_put_with_no_body_and_no_length_is_answered_not_left_waiting(server, x):
    """A client that sends neither a length nor a body and waits for the answer (it will never
    half-close) gets one: after the head timeout with no body byte, the body is empty."""
    vdi = _vdi(x, 2**20, b"keep")
    auth = base64.b64encode(f"root:{server.password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as c:
        c.sendall(f"PUT /import_raw_vdi?vdi={vdi} HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Basic {auth}\r\n\r\n".encode())
        reply = c.recv(4096)                        # no shutdown: the client just waits
    assert b" 400 " in reply.split(b"\r\n")[0] and b"IMPORT_ERROR_PREMATURE_EOF" in reply
    assert open(_path(x, vdi), "rb").read(4) == b"keep"
    x.VDI.destroy(vdi)
