"""Consoles through the real daemon: what one tunnel costs the agent, end to end.

    .venv/bin/python benchmarks/bench_console_agent.py [--tunnels 1000]

bench_console.py measures the tunnel machinery (bulk, RTT) with a bulk upstream, which no VM
console is; this one runs `xcp-httpd serve` itself (tests.server.Server) and opens --tunnels
viewers on the host console (the control domain's `rfb` console, an RFB server inside the
agent) the way a VNC viewer behind `CONNECT` does: CONNECT with the session cookie, xapi's 200,
then the RFB 3.8 handshake up to ServerInit, then idle. It reports the time to set one up (session check, resolution, upstream connect,
handshake), alone and 50 at a time, the agent's RSS growth per idle viewer (the tunnel plus the
console server's own client state, both in the agent), and its open file descriptors before,
during and after. No socat anchor here: socat can neither check a session nor find a console;
bench_console.py has the side-by-side figures for the tunnel itself. Goal of issue 6: under
64 KiB per idle tunnel.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import XenAPI  # noqa: E402

from tests.server import Server  # noqa: E402


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def open_viewer(port: int, path: str, session: str) -> tuple[float, asyncio.StreamWriter]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {path} HTTP/1.0\r\nCookie: session_id={session}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    version = await reader.readexactly(12)
    writer.write(version)                                   # the server's own version
    count = (await reader.readexactly(1))[0]
    types = await reader.readexactly(count)
    if 1 not in types:
        raise RuntimeError(f"no None security among {list(types)}")
    writer.write(b"\x01")
    if await reader.readexactly(4) != b"\0\0\0\0":
        raise RuntimeError("security failed")
    writer.write(b"\x01")                                   # ClientInit: shared
    init = await reader.readexactly(24)
    await reader.readexactly(int.from_bytes(init[20:24], "big"))   # the desktop name
    return time.perf_counter() - started, writer


async def run(port: int, pid: int, path: str, session: str, n: int) -> None:
    await asyncio.sleep(1.0)
    rss0, fd0 = rss_kib(pid), fds(pid)
    alone = []
    for _ in range(100):                                    # one at a time: the latency itself
        t, w = await open_viewer(port, path, session)
        alone.append(t)
        w.close()
        await w.wait_closed()
    times, writers = [], []
    for i in range(0, n, 50):                               # 50 at a time, as a busy pool would
        batch = await asyncio.gather(*(open_viewer(port, path, session)
                                       for _ in range(min(50, n - i))))
        times += [t for t, _ in batch]
        writers += [w for _, w in batch]
    await asyncio.sleep(2.0)
    rss1, fd1 = rss_kib(pid), fds(pid)
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    deadline = time.monotonic() + 20
    while fds(pid) > fd0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    fd2 = fds(pid)
    times.sort()
    print(f"{n} viewers on the host console through CONNECT (RFB 3.8 handshake, then idle)")
    print(f"  setup alone: median {statistics.median(alone) * 1e3:.2f} ms (100 in turn); "
          f"50 at a time: median {statistics.median(times) * 1e3:.2f} ms, "
          f"p99 {times[int(len(times) * 0.99) - 1] * 1e3:.2f} ms")
    print(f"  agent RSS: {rss0 / 1024:.1f} MiB idle -> {rss1 / 1024:.1f} MiB with {n} viewers: "
          f"{(rss1 - rss0) / n:.1f} KiB per viewer (goal < 64 KiB per idle tunnel)")
    print(f"  agent fds: {fd0} before, {fd1} with the viewers (3 per viewer: its socket, the tunnel's upstream and the console server's end),"
          f" {fd2} after they left")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tunnels", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-agent-") as work:
        srv = Server(Path(work) / "data", "--no-demo", "--session-limit", "500").start()
        threading.Thread(target=lambda: [None for _ in srv.proc.stdout], daemon=True).start()
        try:
            s = XenAPI.Session(srv.url)
            s.xenapi.login_with_password("root", srv.password)
            dom0 = next(v for v, r in s.xenapi.VM.get_all_records().items()
                        if r["is_control_domain"])
            rfb = next(c for c in s.xenapi.VM.get_consoles(dom0)
                       if s.xenapi.console.get_protocol(c) == "rfb")
            print(f"machine: nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; "
                  f"xcp-httpd pid {srv.proc.pid}")
            asyncio.run(run(srv.port, srv.proc.pid, f"/console?ref={rfb}", s._session,
                            args.tunnels))
            s.xenapi.session.logout()
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
