"""`xe console`: a VM's text (vt100) console on this terminal, through HTTP CONNECT.

The guide's console protocol: `CONNECT /console?ref=...` (or `uuid=`), then the connection is
the console's byte stream. For a vt100 console that stream is the guest's text terminal, relayed
raw; Ctrl-] leaves. (The server's /console endpoint is being built; until then this reports the
server's answer.)
"""

from __future__ import annotations

import os
import select as _select
import sys
from urllib.parse import urlsplit

from .client import XeError
from .core import Ctx, command
from .vm import select_one

ESCAPE = b"\x1d"   # Ctrl-]


def _connect(ctx: Ctx, location: str):
    target = urlsplit(location)
    path = (target.path or "/console") + (f"?{target.query}" if target.query else "")
    sep = "&" if "?" in path else "?"
    path += f"{sep}session_id={ctx.session.ref}"
    conn = ctx.endpoint.connection(timeout=30.0)
    try:
        conn.connect()
        conn.sock.sendall(f"CONNECT {path} HTTP/1.0\r\nUser-Agent: xe\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            more = conn.sock.recv(4096)
            if not more:
                break
            head += more
    except OSError as e:
        raise ctx.endpoint.explain(e) from None
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split()
    if len(parts) < 2 or parts[1] != "200":
        conn.close()
        raise XeError(f"Error: the server refused the console connection: {status_line or 'no answer'}")
    rest = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
    conn.sock.settimeout(None)
    return conn, rest


@command("console", "Attach this terminal to a VM's text console (default: the control "
         "domain); Ctrl-] leaves.", selector="VM", flags=("multiple",))
def console(ctx: Ctx) -> None:
    if not any(k in ctx.params for k in ("uuid", "vm")) and len(ctx.params) == 0:
        host = list(ctx.call("host.get_all"))[0]  # type: ignore[index]
        vm = str(ctx.call("host.get_control_domain", host))
        rec = dict(ctx.call("VM.get_record", vm))  # type: ignore[arg-type]
    else:
        vm, rec = select_one(ctx, "VM", ())
    consoles = [ctx.lookup("console", c) for c in rec.get("consoles", [])]
    text = [c for c in consoles if c and c.get("protocol") == "vt100"]
    if not text:
        raise XeError(f"Error: VM {rec['uuid']} has no text (vt100) console")
    conn, rest = _connect(ctx, text[0]["location"])
    sock = conn.sock
    out = sys.stdout.buffer
    if rest:
        out.write(rest)
        out.flush()
    fd = sys.stdin.fileno()
    restore = None
    if os.isatty(fd):
        import termios
        import tty
        restore = termios.tcgetattr(fd)
        tty.setraw(fd)
        sys.stderr.write("Connected to the console; Ctrl-] leaves.\r\n")
    try:
        while True:
            ready, _, _ = _select.select([sock, fd], [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                out.write(data)
                out.flush()
            if fd in ready:
                data = os.read(fd, 4096)
                if not data or (restore is not None and ESCAPE in data):
                    break
                sock.sendall(data)
    finally:
        if restore is not None:
            import termios
            termios.tcsetattr(fd, termios.TCSADRAIN, restore)
            sys.stderr.write("\n")
        conn.close()
