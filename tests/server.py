"""Run the real daemon as a subprocess on loopback for tests (no mocks of our own server)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Server"]

PASSWORD = "s3cret-test"


class Server:
    """`xcp-httpd serve` on 127.0.0.1 with an ephemeral port and a Unix socket."""

    def __init__(self, data_dir: Path, *extra: str, password: str = PASSWORD,
                 wrap: tuple[str, ...] = (), listen: str = "127.0.0.1:0") -> None:
        self.data_dir = Path(data_dir)
        self.listen = listen      # a pool's hosts: 127.0.0.N on one port
        self.wrap = wrap          # a command the daemon runs under (e.g. unshare --net)
        self.password = password
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.output: list[str] = []

    @property
    def socket_path(self) -> str:
        return str(self.data_dir / "xapi.sock")

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, timeout: float = 30.0) -> "Server":
        env = {**os.environ, "XCP_ROOT_PASSWORD": self.password, "PYTHONUNBUFFERED": "1"}
        # the simulated backend unless a test asks for another (`auto` would pick QEMU here)
        backend = () if "--backend" in self.extra else ("--backend", "simulated")
        self.proc = subprocess.Popen(
            [*self.wrap, sys.executable, "-m", "httpd.cli", "serve", "--data-dir", str(self.data_dir),
             "--listen", self.listen, "--unix-socket", self.socket_path,
             "--login-fail-delay", "0.05", "--log-level", "WARNING", *backend, *self.extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            cwd=Path(__file__).resolve().parent.parent)
        self.output = []
        return self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> "Server":
        """Read the daemon's output until it says ready (again, after it exec'd itself)."""
        self.url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited early:\n" + "".join(self.output))
            self.output.append(line)
            if line.startswith("xcp-httpd listening on http://") and not self.url:
                self.url = line.split()[-1]
            if line.strip() == "ready":
                return self
        raise RuntimeError("server did not start:\n" + "".join(self.output))

    def drain_output(self, wait: float = 0.2) -> str:
        """What the daemon logged since it was last read (it logs at WARNING and above)."""
        out = []
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], wait)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            out.append(chunk.decode(errors="replace"))
            wait = 0.05
        text = "".join(out)
        self.output.append(text)
        return text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()
        self.proc = None
        self.url = ""
        return rc

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def qemu_pids(self) -> dict[str, int]:
        """VM uuid -> pid of each QEMU the QEMU backend left running for this data directory
        (its domains outlive the agent)."""
        found = {}
        for facts in (self.data_dir / "vm").glob("*/qemu.pid"):
            try:
                pid = int(facts.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if str(facts.parent / "qmp.sock").encode() in cmdline:
                found[facts.parent.name] = pid
        return found

    def kill_domains(self) -> None:
        """End every QEMU and dnsmasq of this data directory (a test's last step: nothing
        left running)."""
        pids = list(self.qemu_pids().values())
        for pidfile in (self.data_dir / "vm").glob("dnsmasq-*.pid"):
            try:
                pid = int(pidfile.read_text())
                if str(pidfile).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(pid)
            except (OSError, ValueError):
                continue
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def restart(self) -> "Server":
        self.stop()
        return self.start()

    def session(self):
        import XenAPI
        s = XenAPI.Session(self.url)
        s.xenapi.login_with_password("root", self.password, "2.21", "tests")
        return s
