"""The load test of issue 14: each attack against a live server while a canary logs in.

    .venv/bin/python benchmarks/bench_attacks.py [--seconds 5]

Starts `xcp-httpd serve` in a temp dir (tests.server.Server). A canary thread logs in over
JSON-RPC every 50 ms (the right password) and records each answer's latency. First the canary
runs alone (the anchor), then during each attack in turn:

  1  batches     4 clients posting a 448 KiB JSON-RPC batch of 10,000 system.listMethods, anonymous
  2  half heads  2,000 connections that send half a request head and wait
  3  guessing    50 clients guessing root's password as fast as they are answered
  5  sets        VM.set_tags with 40,000 tags and event.from with 20,000 classes, in a loop
  7  consoles    500 CONNECTs to the host console at once (each 200 must carry RFB bytes)
  8  big bodies  6 clients posting 14 MiB XML-RPC bodies without a session

Prints, per attack, the canary's worst and median latency, the ratio of the worst to the
anchor's worst, and the server's RSS growth (peak during the attack minus before it).
Goal: the canary's worst under 100 ms and RSS growth under 100 MiB for every attack.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import xmlrpc.client
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.server import Server  # noqa: E402


def _post(url: str, body: bytes, ctype: str = "application/json", timeout: float = 60):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


class Canary(threading.Thread):
    def __init__(self, srv: Server) -> None:
        super().__init__(daemon=True)
        self.url = srv.url + "/jsonrpc"
        self.body = json.dumps({"jsonrpc": "2.0", "method": "session.login_with_password",
                                "params": ["root", srv.password], "id": 1}).encode()
        self.samples: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            status, body = _post(self.url, self.body, timeout=30)
            dt = time.perf_counter() - t0
            if status != 200 or b'"result"' not in body:
                self.failures += 1
            else:
                sid = json.loads(body)["result"]
                _post(self.url, json.dumps({"method": "session.logout", "params": [sid],
                                            "id": 2}).encode())
            self.samples.append(dt)
            time.sleep(0.05)


class Rss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def now(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)


def _attack_process(attack, url: str, password: str, seconds: float, out) -> None:
    """An attack in a process of its own, so its threads never take the canary's GIL."""
    srv = Server.__new__(Server)
    srv.url, srv.password = url, password
    stop = threading.Event()
    workers = attack(srv, stop)
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join(timeout=60)
    out.put(getattr(attack, "result", None))


def measure(srv: Server, seconds: float, attack=None) -> dict:
    canary, rss = Canary(srv), Rss(srv.proc.pid)
    before = rss.now()
    proc = out = None
    if attack is not None:
        out = multiprocessing.Queue()
        proc = multiprocessing.Process(target=_attack_process, daemon=True, args=(
            attack, srv.url, srv.password, seconds + 0.3, out))
        proc.start()
    time.sleep(0.3)                 # the attack is under way
    rss.start()
    canary.start()
    time.sleep(seconds)
    canary.stop.set()
    canary.join()
    extra = None
    if proc is not None:
        extra = out.get(timeout=120)
        proc.join(timeout=60)
    rss.stop.set()
    rss.join()
    s = sorted(canary.samples)
    return {"worst": s[-1] if s else float("inf"), "median": statistics.median(s) if s else 0,
            "answers": len(s), "failed": canary.failures,
            "rss": max(0, rss.peak - before), "extra": extra}


def _loop(stop: threading.Event, fn, n: int) -> list[threading.Thread]:
    def run() -> None:
        while not stop.is_set():
            fn()
    threads = [threading.Thread(target=run, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads


def batches(srv, stop):
    body = json.dumps([{"method": "system.listMethods", "id": i} for i in range(10_000)]).encode()
    return _loop(stop, lambda: _post(srv.url + "/jsonrpc", body), 4)


def half_heads(srv, stop):
    socks = []

    def hold() -> None:
        for _ in range(2000):
            try:
                s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
                s.sendall(b"GET /host_rrd HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            except OSError:
                time.sleep(0.01)
        stop.wait()
        for s in socks:
            s.close()
    t = threading.Thread(target=hold, daemon=True)
    t.start()
    return [t]


def guessing(srv, stop):
    body = json.dumps({"method": "session.login_with_password", "params": ["root", "guess"],
                       "id": 1}).encode()
    return _loop(stop, lambda: _post(srv.url + "/jsonrpc", body), 50)


def sets(srv, stop):
    x = xmlrpc.client.ServerProxy(srv.url)
    sid = x.session.login_with_password("root", srv.password)["Value"]
    vm = x.VM.get_all(sid)["Value"][0]
    tags = [f"t{i}" for i in range(40_000)]

    def one() -> None:
        p = xmlrpc.client.ServerProxy(srv.url)
        p.VM.set_tags(sid, vm, tags)
        getattr(p, "event.from")(sid, ["vm"] * 20_000, "", 0.0)
    return _loop(stop, one, 2)


def consoles(srv, stop):
    x = xmlrpc.client.ServerProxy(srv.url)
    sid = x.session.login_with_password("root", srv.password)["Value"]
    host_vm = next(r for r, v in x.VM.get_all_records(sid)["Value"].items()
                   if v["is_control_domain"])
    rfb = next(c for c in x.VM.get_consoles(sid, host_vm)["Value"]
               if x.console.get_protocol(sid, c)["Value"] == "rfb")
    result = {"200": 0, "silent": 0, "other": 0}

    def one() -> None:
        try:
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
            s.sendall(f"CONNECT /console?ref={rfb}&session_id={sid} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
                rest = data.split(b"\r\n\r\n", 1)[1]
                s.settimeout(10)
                while len(rest) < 12:
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    rest += chunk
                result["200" if rest.startswith(b"RFB ") else "silent"] += 1
            else:
                result["other"] += 1
            s.close()
        except OSError:
            result["other"] += 1

    def run() -> None:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(500) as pool:
            list(pool.map(lambda _: one(), range(500)))
        result["all answered in s"] = round(time.perf_counter() - t0, 2)
    consoles.result = result
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return [t]


def big_bodies(srv, stop):
    body = xmlrpc.client.dumps(("OpaqueRef:00000000-0000-0000-0000-000000000000", "x" * (14 << 20)),
                               "VM.set_name_description").encode()
    return _loop(stop, lambda: _post(srv.url, body, "text/xml"), 6)


ATTACKS = [("1 batches", batches), ("2 half heads", half_heads), ("3 guessing", guessing),
           ("5 sets", sets), ("7 consoles", consoles), ("8 big bodies", big_bodies)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", nargs="*", help="attack numbers to run (default: all)")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as d:
        srv = Server(Path(d) / "data").start()
        try:
            srv.session().xenapi.session.logout()    # the password's scrypt check, done once
            anchor = measure(srv, args.seconds)
            print(f"{'attack':<14} {'canary worst':>12} {'median':>8} {'x anchor':>9} "
                  f"{'answers':>8} {'failed':>7} {'RSS +MiB':>9}")
            print(f"{'(none)':<14} {anchor['worst'] * 1000:>10.1f}ms "
                  f"{anchor['median'] * 1000:>6.1f}ms {1:>9.2f} {anchor['answers']:>8} "
                  f"{anchor['failed']:>7} {anchor['rss'] / 2**20:>9.1f}")
            for name, attack in ATTACKS:
                if args.only and name.split()[0] not in args.only:
                    continue
                r = measure(srv, args.seconds, attack)
                print(f"{name:<14} {r['worst'] * 1000:>10.1f}ms {r['median'] * 1000:>6.1f}ms "
                      f"{r['worst'] / anchor['worst']:>9.2f} {r['answers']:>8} {r['failed']:>7} "
                      f"{r['rss'] / 2**20:>9.1f}", flush=True)
                if r["extra"] is not None:
                    print(f"{'':<14} CONNECTs: {r['extra']}")
                time.sleep(1)
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
