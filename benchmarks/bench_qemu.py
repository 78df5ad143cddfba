"""The QEMU backend against QEMU by hand (issue 16).

    .venv/bin/python benchmarks/bench_qemu.py [--guests 20] [--window 60] [--rounds 3]

Starts `xcp-httpd serve --backend qemu --accel tcg --guest-network user` in a temp dir and
measures, each next to its floor in the same run:

  start    VM.start to "login:" on the serial console (read through CONNECT on the agent's
           Unix socket), next to the same qemu-system-x86_64 command line started by hand
           (taken from the agent's QEMU, without -daemonize and -S) to "login:" on its serial
           socket
  suspend  VM.suspend, next to the same QMP steps by hand (stop, migrate to a file, quit)
  resume   VM.resume, next to QEMU by hand with -incoming from that file until it runs
  cpu      the agent's CPU time per running guest (statistics collection, console relays,
           guest agent reports) with --guests guests idle at their login prompt, over
           --window seconds, less the agent's CPU with none running

Goal: the agent adds < 10 % to start and < 1 % CPU per VM.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from httpd.backends.qemu.guest import fetch_kernel  # noqa: E402
from tests.server import Server  # noqa: E402

CACHE = HERE.parent / "tests" / ".cache" / "guest-kernel"
LOGIN = re.compile(rb"login: ")
START_CALLS: list[float] = []     # how long VM.start itself took, of each agent start


def _read_until(sock: socket.socket, pattern: re.Pattern, timeout: float) -> None:
    """Read until `pattern`; RuntimeError (with the last output) if it never comes."""
    sock.settimeout(1.0)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            raise RuntimeError("the console closed")
        seen = (seen + chunk)[-4096:]
        if pattern.search(seen):
            return
    raise RuntimeError(f"no login prompt; the console said: {seen[-500:]!r}")


def _connect_retry(path: str, timeout: float = 30.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def agent_start(srv: Server, session, vm: str) -> float:
    x = session.xenapi
    t0 = time.monotonic()
    x.VM.start(vm, False, False)
    START_CALLS.append(time.monotonic() - t0)
    console = next(c for c in x.VM.get_consoles(vm) if x.console.get_protocol(c) == "vt100")
    s = socket.socket(socket.AF_UNIX)
    s.connect(srv.socket_path)
    s.sendall(f"CONNECT /console?ref={console}&session_id={session._session} HTTP/1.0\r\n\r\n"
              .encode())
    try:
        _read_until(s, LOGIN, 120)
    finally:
        s.close()
    return time.monotonic() - t0


def by_hand_argv(srv: Server, uuid: str, work: Path) -> list[str]:
    """The agent's QEMU command line for that VM, in `work`, without -daemonize, -S and
    -incoming (a resumed QEMU's)."""
    pid = srv.qemu_pids()[uuid]
    args = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]
    if "-incoming" in args:
        i = args.index("-incoming")
        del args[i:i + 2]
    run = str(srv.data_dir / "vm" / uuid)
    out = []
    for a in args:
        if a in ("-daemonize", "-S"):
            continue
        out.append(a.replace(run, str(work)))
    for name in ("kernel", "initrd"):          # pygrub's copies, as the agent made them
        shutil.copyfile(Path(run) / name, work / name)
    return out


def hand_start(cmd: list[str], work: Path) -> tuple[float, subprocess.Popen]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    s = _connect_retry(str(work / "serial.sock"))
    try:
        _read_until(s, LOGIN, 120)
    finally:
        s.close()
    return time.monotonic() - t0, proc


class Qmp:
    def __init__(self, path: str) -> None:
        self.sock = _connect_retry(path)
        self.f = self.sock.makefile("rwb")
        self.f.readline()
        self("qmp_capabilities")

    def __call__(self, name: str, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                return msg


def hand_suspend(work: Path, state: Path, proc: subprocess.Popen) -> float:
    q = Qmp(str(work / "qmp.sock"))
    t0 = time.monotonic()
    q("stop")
    q("migrate", uri=f"exec:dd of={state} bs=1M conv=notrunc,fsync status=none")
    while q("query-migrate")["return"].get("status") != "completed":
        time.sleep(0.05)
    q("quit")
    proc.wait()
    return time.monotonic() - t0


def hand_resume(cmd: list[str], work: Path, state: Path) -> float:
    t0 = time.monotonic()
    proc = subprocess.Popen([*cmd, "-incoming", f"exec:cat {state}"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    q = Qmp(str(work / "qmp.sock"))
    while q("query-status")["return"].get("status") == "inmigrate":
        time.sleep(0.05)
    q("cont")                   # the state was saved stopped: it loads stopped
    took = time.monotonic() - t0
    q("quit")
    proc.wait()
    return took


def agent_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def provision(x, name: str) -> str:
    vm = x.VM.clone(x.VM.get_by_name_label("Debian Etch 4.0")[0], name)
    x.VM.provision(vm)
    return vm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--guests", type=int, default=20)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    fetch_kernel(CACHE)
    with tempfile.TemporaryDirectory(prefix="bq", dir="/tmp") as tmp:
        data = Path(tmp) / "d"
        (data / "guest").mkdir(parents=True)
        shutil.copytree(CACHE, data / "guest" / "kernel")
        srv = Server(data, "--backend", "qemu", "--accel", "tcg", "--guest-network", "user",
                     "--no-demo").start(timeout=120)
        try:
            run(srv, args, Path(tmp))
        finally:
            srv.kill_domains()
            srv.stop()


def _row(name: str, ours: list[float], floor: list[float]) -> None:
    o, f = statistics.median(ours), statistics.median(floor)
    print(f"{name:8s} ours {o:6.2f} s (min {min(ours):.2f})   by hand {f:6.2f} s "
          f"(min {min(floor):.2f})   ratio {o / f:.3f}")


def run(srv: Server, args, tmp: Path) -> None:
    session = srv.session()
    x = session.xenapi
    vm = provision(x, "bench")
    uuid = x.VM.get_uuid(vm)
    starts, hand_starts, susp, hand_susp, res, hand_res = [], [], [], [], [], []
    work = tmp / "hand"
    for _ in range(args.rounds):
        starts.append(agent_start(srv, session, vm))
        time.sleep(1)
        t0 = time.monotonic()
        x.VM.suspend(vm)
        susp.append(time.monotonic() - t0)
        t0 = time.monotonic()
        x.VM.resume(vm, False, False)
        res.append(time.monotonic() - t0)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        cmd = by_hand_argv(srv, uuid, work)
        x.VM.hard_shutdown(vm)
        took, proc = hand_start(cmd, work)
        hand_starts.append(took)
        time.sleep(1)
        state = tmp / "state"
        state.write_bytes(b"")
        hand_susp.append(hand_suspend(work, state, proc))
        hand_res.append(hand_resume(cmd, work, state))
    print(f"QEMU {subprocess.run(['qemu-system-x86_64', '--version'], capture_output=True, text=True).stdout.splitlines()[0]}, TCG, 256 MiB guest, {args.rounds} rounds", flush=True)
    _row("start", starts, hand_starts)
    print(f"         (of which VM.start answered in {statistics.median(START_CALLS):.2f} s)",
          flush=True)
    _row("suspend", susp, hand_susp)
    _row("resume", res, hand_res)

    agent = srv.proc.pid
    time.sleep(5)
    c0 = agent_cpu(agent)
    time.sleep(args.window)
    idle = (agent_cpu(agent) - c0) / args.window
    vms = [provision(x, f"g{i}") for i in range(args.guests)]
    t0 = time.monotonic()
    for v in vms:
        x.VM.start(v, False, False)

    def booted() -> bool:
        for v in vms:
            gm = x.VM.get_guest_metrics(v)
            if gm == "OpaqueRef:NULL":
                return False
        return True
    while not booted():
        time.sleep(2)
    boot_all = time.monotonic() - t0
    time.sleep(15)
    c0 = agent_cpu(agent)
    time.sleep(args.window)
    busy = (agent_cpu(agent) - c0) / args.window
    per_vm = (busy - idle) / args.guests
    print(f"cpu      {args.guests} guests booted in {boot_all:.0f} s; agent CPU idle "
          f"{idle * 100:.2f} %, with the guests {busy * 100:.2f} %: {per_vm * 100:.3f} % "
          f"of one core per VM over {args.window:.0f} s")
    for v in vms:
        x.VM.hard_shutdown(v)
    session.xenapi.session.logout()


if __name__ == "__main__":
    main()
