#!/usr/bin/env python3
"""Console tunnel benchmark: our CONNECT tunnel and WebSocket bridge vs socat.

Same client, same upstream ("VNC server") and same loopback path in one run:

    client --> [proxy under test] --> upstream

* bulk: the upstream sends N MiB, the client reads to EOF (the direction that
  carries framebuffer updates); MB/s, ratio to socat.
* rtt: 16-byte ping-pong through an echoing upstream; added RTT over a direct
  connection.
* idle: 1000 concurrent idle CONNECT tunnels; agent RSS growth per tunnel.

The proxy runs in its own process (ours: `--agent`, an aiohttp app with the
console front end; socat: `TCP-LISTEN:...,fork`); client and upstream are
blocking sockets in threads of the driver process.
Usage: .venv/bin/python benchmarks/bench_console.py [--mib 512] [--pings 2000] [--idle 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHUNK = 256 * 1024
PING = b"p" * 16
HEAD = b"CONNECT /console?ref=OpaqueRef:bench HTTP/1.0\r\nCookie: session_id=bench\r\n\r\n"


# ---- upstream: 'B' + 8-byte size -> send that many bytes; 'E' -> echo; 'I' -> idle until EOF
def _upstream_conn(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"B":
            size = int.from_bytes(_recv_exact(conn, 8), "big")
            block = memoryview(bytes(CHUNK))
            while size > 0:
                n = min(size, CHUNK)
                conn.sendall(block[:n])
                size -= n
        elif mode == b"E":
            while data := conn.recv(65536):
                conn.sendall(data)
        elif mode == b"I":
            conn.recv(1)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed early")
        buf += chunk
    return buf


def start_upstream() -> int:
    listener = socket.create_server(("127.0.0.1", 0), backlog=2048)

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=_upstream_conn, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return listener.getsockname()[1]


# ---- the agent process (ours)
def run_agent(upstream_port: int) -> None:
    from aiohttp import web

    from console_proxy import ConnectFrontEnd, ConnectTCPSite, bridge_websocket

    async def main() -> None:
        upstream = ("127.0.0.1", upstream_port)

        async def on_connect(client) -> None:
            await client.tunnel(upstream)

        async def ws(request):
            return await bridge_websocket(request, upstream, heartbeat=None, max_msg_size=4 << 20)

        app = web.Application()
        app.router.add_get("/console", ws)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        front_end = ConnectFrontEnd(on_connect)
        site = ConnectTCPSite(runner, "127.0.0.1", 0, front_end=front_end, backlog=2048)
        await site.start()
        print(site.port, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---- clients
def open_client(kind: str, port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "connect":
        sock.sendall(HEAD)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200 OK"), head
    return sock


def bulk_tcp(kind: str, port: int, size: int) -> float:
    sock = open_client(kind, port)
    buf = bytearray(1 << 20)
    start = time.perf_counter()
    sock.sendall(b"B" + size.to_bytes(8, "big"))
    got = 0
    while n := sock.recv_into(buf):
        got += n
    elapsed = time.perf_counter() - start
    sock.close()
    assert got == size, (got, size)
    return size / elapsed / 1e6


def rtt_tcp(kind: str, port: int, pings: int) -> list[float]:
    sock = open_client(kind, port)
    sock.sendall(b"E")
    samples = []
    for _ in range(pings):
        t0 = time.perf_counter()
        sock.sendall(PING)
        _recv_exact(sock, len(PING))
        samples.append(time.perf_counter() - t0)
    sock.close()
    return samples


def ws_run(port: int, what: str, size: int, pings: int):
    import aiohttp

    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/console", protocols=("binary",),
                                          max_msg_size=8 << 20, compress=0) as ws:
                if what == "bulk":
                    start = time.perf_counter()
                    await ws.send_bytes(b"B" + size.to_bytes(8, "big"))
                    got = 0
                    async for msg in ws:
                        got += len(msg.data)
                        if got >= size:
                            break
                    return size / (time.perf_counter() - start) / 1e6
                await ws.send_bytes(b"E")
                samples = []
                for _ in range(pings):
                    t0 = time.perf_counter()
                    await ws.send_bytes(PING)
                    got = 0
                    while got < len(PING):
                        got += len((await ws.receive()).data)
                    samples.append(time.perf_counter() - t0)
                return samples

    return asyncio.run(main())


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def idle_tunnels(port: int, pid: int, count: int) -> float:
    before = rss_kib(pid)
    socks = []
    for _ in range(count):
        sock = open_client("connect", port)
        sock.sendall(b"I")
        socks.append(sock)
    time.sleep(0.5)
    after = rss_kib(pid)
    for sock in socks:
        sock.close()
    return (after - before) / count


def wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="bulk transfer size")
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="best of N for bulk")
    parser.add_argument("--agent", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.agent:
        run_agent(args.agent)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    if shutil.which("socat") is None:
        sys.exit("socat is required (make apt-test)")

    upstream = start_upstream()
    agent = subprocess.Popen([sys.executable, __file__, "--agent", str(upstream)], stdout=subprocess.PIPE, text=True)
    socats, socat_ports = [], []
    for extra in ([], ["-b", str(CHUNK)]):  # socat's default 8 KiB buffer, and ours (256 KiB)
        port = socket.create_server(("127.0.0.1", 0)).getsockname()[1]  # free port (tiny race, fine here)
        socat_ports.append(port)
        socats.append(subprocess.Popen(["socat", *extra, f"TCP-LISTEN:{port},fork,reuseaddr,bind=127.0.0.1,backlog=2048",
                                        f"TCP:127.0.0.1:{upstream},nodelay"]))
    try:
        agent_port = int(agent.stdout.readline())
        for port in socat_ports:
            wait_port(port)
        size = args.mib << 20
        print(f"# {platform.node()}: {os.cpu_count()} CPU, {platform.processor() or platform.machine()}, "
              f"Python {platform.python_version()}, {args.mib} MiB bulk, {args.pings} pings")
        paths = {"direct": ("raw", upstream), "socat": ("raw", socat_ports[0]),
                 "socat-b256k": ("raw", socat_ports[1]), "connect": ("connect", agent_port)}
        bulk = {name: max(bulk_tcp(kind, port, size) for _ in range(args.rounds)) for name, (kind, port) in paths.items()}
        bulk["websocket"] = max(ws_run(agent_port, "bulk", size, 0) for _ in range(args.rounds))
        rtt = {name: statistics.median(rtt_tcp(kind, port, args.pings)) for name, (kind, port) in paths.items()}
        rtt["websocket"] = statistics.median(ws_run(agent_port, "rtt", 0, args.pings))
        for name in ("direct", "socat", "socat-b256k", "connect", "websocket"):
            added = (rtt[name] - rtt["direct"]) * 1e3
            print(f"{name:11s} bulk {bulk[name]:8.0f} MB/s ({bulk[name] / bulk['socat']:.2f}x socat)   "
                  f"rtt p50 {rtt[name] * 1e3:.3f} ms (+{added:.3f} ms vs direct)")
        per_tunnel = idle_tunnels(agent_port, agent.pid, args.idle)
        print(f"idle tunnels: {args.idle} open, agent RSS +{per_tunnel:.1f} KiB per tunnel")
    finally:
        for proc in (agent, *socats):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
