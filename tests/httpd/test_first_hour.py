"""What an administrator meets first: one agent per data directory, a busy port in one line,
an access log that names each request's status and error (and no secret), `serve --help`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.server import PASSWORD, Server

ROOT = Path(__file__).resolve().parents[2]


def _serve(data: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "httpd.cli", "serve", "--data-dir", str(data),
                           "--backend", "simulated", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "XCP_ROOT_PASSWORD": "x"})


def _status(url: str, user: str | None = None) -> int:
    """curl's status for a GET of `url` (Basic auth as root with `user`'s password)."""
    auth = ["-u", f"root:{user}"] if user is not None else []
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *auth, url],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return int(out)


def test_a_second_agent_on_the_data_directory_is_refused_and_touches_nothing(tmp_path):
    first = Server(tmp_path / "var").start()
    try:
        s = first.session()
        vm = s.xenapi.VM.get_by_name_label("demo")[0]
        s.xenapi.VM.start(vm, False, False)
        r = _serve(first.data_dir, "--listen", "127.0.0.1:0",
                   "--unix-socket", first.socket_path)
        assert r.returncode == 1
        lines = r.stderr.strip().splitlines()
        assert lines == [f"xcp-httpd: {first.data_dir} is in use by another agent "
                         f"(pid {first.proc.pid}); stop it or give this one another "
                         "--data-dir"], r.stderr
        assert "Traceback" not in r.stdout
        # the first agent's socket, VM and database are as they were
        assert os.path.exists(first.socket_path)
        assert s.xenapi.VM.get_power_state(vm) == "Running"
        login = ("<methodCall><methodName>session.login_with_password</methodName><params>"
                 "<param><value>root</value></param><param><value></value></param>"
                 "</params></methodCall>")
        out = subprocess.run(["curl", "-s", "--unix-socket", first.socket_path,
                              "http://localhost/", "-H", "Content-Type: text/xml", "-d", login],
                             capture_output=True, text=True, timeout=30).stdout
        assert "<name>Status</name><value>Success</value>" in out.replace("\n", ""), out
    finally:
        first.stop()
    # once the first agent stopped, the lock is free: the next start takes it
    again = Server(first.data_dir).start()
    try:
        assert again.session().xenapi.VM.get_power_state(vm) == "Running"
    finally:
        again.stop()


def test_a_busy_port_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = _serve(tmp_path / "var", "--listen", f"127.0.0.1:{port}", "--no-demo")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"xcp-httpd: cannot listen on 127.0.0.1:{port}: address already in use"], r.stderr
    assert "Traceback" not in r.stdout


def test_access_log_names_status_error_and_task_but_no_secret(tmp_path):
    log = tmp_path / "agent.log"
    srv = Server(tmp_path / "var", "--log-level", "INFO", "--log-file", str(log)).start()
    try:
        s = srv.session()
        sid = s._session
        base = srv.url
        assert _status(f"{base}/host_rrd", PASSWORD) == 200
        assert _status(f"{base}/host_rrd?session_id=OpaqueRef:not-a-session") == 401
        assert _status(f"{base}/host_rrd", "wrong") == 401
        assert _status(f"{base}/export?session_id={sid}&uuid=no-such-vm") == 404
        # a VDI whose file is gone: the export cannot read it
        vdi = s.xenapi.VDI.get_by_name_label("demo disk 0")
        vdi = vdi[0] if vdi else s.xenapi.VBD.get_VDI(s.xenapi.VM.get_VBDs(
            s.xenapi.VM.get_by_name_label("demo")[0])[0])
        for f in (srv.data_dir / "sr").rglob(s.xenapi.VDI.get_uuid(vdi) + "*"):
            f.unlink()
        assert _status(f"{base}/export_raw_vdi?session_id={sid}&vdi={vdi}&format=raw") == 500
        task = s.xenapi.task.create("polled", "")
        assert _status(f"{base}/rrd_updates?session_id={sid}&start=0&task_id={task}") == 200
        assert _status(f"{base}/no%0Afake%20line") == 404       # a newline in the path
        forged = {"jsonrpc": "2.0", "method": "x\n127.0.0.1 GET /forged 200", "params": [],
                  "id": 2}
        req = urllib.request.Request(f"{base}/jsonrpc", json.dumps(forged).encode(),
                                     {"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).read()
        call = {"jsonrpc": "2.0", "method": "VM.start",
                "params": [sid, "OpaqueRef:nope", False, False], "id": 1}
        req = urllib.request.Request(f"{base}/jsonrpc", json.dumps(call).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.load(r)["error"]["message"] == "HANDLE_INVALID"
    finally:
        srv.stop()
    text = log.read_text()
    access = [ln.split("xcp_httpd.access: ", 1)[1] for ln in text.splitlines()
              if "xcp_httpd.access: " in ln]
    assert "127.0.0.1 GET /host_rrd 200 " in "\n".join(access)
    assert any(a.startswith("127.0.0.1 GET /host_rrd?session_id=*** 401 ")
               and a.endswith("error=SESSION_INVALID") for a in access), access
    assert any(a.startswith("127.0.0.1 GET /host_rrd 401 ")
               and a.endswith("error=SESSION_AUTHENTICATION_FAILED") for a in access), access
    assert any(a.startswith("127.0.0.1 GET /export?session_id=***&uuid=no-such-vm 404 ")
               and a.endswith("error=UUID_INVALID") for a in access), access
    assert any(a.startswith("127.0.0.1 GET /export_raw_vdi?") and " 500 " in a
               and a.endswith("error=VDI_MISSING") for a in access), access
    assert any(a.startswith("127.0.0.1 GET /rrd_updates?") and f"task={task} " in a
               for a in access), access
    assert any(a.startswith("127.0.0.1 POST /jsonrpc 200 ")
               and a.endswith("error=VM.start:HANDLE_INVALID") for a in access), access
    assert "127.0.0.1 GET /no%0Afake%20line 404 " in "\n".join(access)
    assert not any(a.startswith("127.0.0.1 GET /forged") for a in access)      # no forged line
    assert all(ln.startswith("20") for ln in text.splitlines()), "a line without a timestamp"
    assert sid not in text and PASSWORD not in text
    assert "Traceback" not in text


def test_serve_help_says_each_default_once():
    r = subprocess.run([sys.executable, "-m", "httpd.cli", "serve", "--help"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for bad in ("(default: None)", "(default: [])", "Config."):
        assert bad not in text
    assert "--listen HOST:PORT HTTP address, repeatable (default: 127.0.0.1:8080)" in text
    for flag in ("--data-dir DIR", "--log-level", "--log-file FILE"):
        i = text.index(flag, text.index("options:"))
        assert "(default" in text[i:i + 250] or flag == "--log-file FILE", flag
