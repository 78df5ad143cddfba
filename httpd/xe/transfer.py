"""vm-export and vm-import over HTTP, with a progress bar on a terminal and cancellation.

The protocol (the guide, chapter 5): create a task, `GET /export?uuid=&session_id=&task_id=` or
`PUT /import?session_id=&task_id=&sr_uuid=` streaming the body, then wait for the task: its
status, not the HTTP status, says how it went; an import's `task.result` is the XML-RPC text of
the new VM refs. Ctrl-C cancels the task on the server (task.cancel) and exits non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TextIO
from urllib.parse import urlencode, urlsplit

from ..allocator import keep_big_buffers
from ..wire.xmlrpc import XMLRPCParseError, parse_value_text
from .client import ApiFailure, Endpoint, Session, XeError
from .core import Ctx, UsageError, command
from .vm import select_one

__all__ = ["Progress"]

CHUNK = 1 << 20


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _clock(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Progress:
    """`label [####------] 42% 1.2 GiB/2.9 GiB 85.3 MiB/s ETA 0:00:21` on a terminal only.

    The share done is the bytes moved over `total` when it is known, else the server task's
    own progress (`fraction`, polled by `ticking`), which is right however much compression
    shrinks the stream. `ticking` also keeps the clock moving while the server prepares and
    no byte moves yet, so a long preparation does not look like a hang."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None,
                 enabled: bool | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label, self.total, self.width = label, total, width
        self.done = 0
        self.fraction: float | None = None
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def share(self) -> float | None:
        if self.total:
            return min(self.done / self.total, 1.0)
        return self.fraction

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.done / elapsed
        frac = self.share()
        if frac is None:
            return f"{self.label} {_human(self.done)} {_human(rate)}/s {_clock(elapsed)}"
        bar = "#" * int(frac * self.width)
        eta = _clock(elapsed * (1 - frac) / frac) if frac > 0 else "--:--:--"
        size = f"{_human(self.done)}/{_human(self.total)}" if self.total else _human(self.done)
        return (f"{self.label} [{bar.ljust(self.width, '-')}] {frac * 100:3.0f}% "
                f"{size} {_human(rate)}/s ETA {eta}")

    def _paint(self, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if force or now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r" + self.line() + "\x1b[K")
                self.stream.flush()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            self._paint()

    @contextlib.contextmanager
    def ticking(self, poll: Callable[[], float] | None = None,
                every: float = 0.5) -> Iterator[None]:
        """Repaint every `every` s, taking the share done from `poll` (the task's progress)
        when the total is unknown; `poll` runs in the painting thread."""
        if not self.enabled:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(every):
                if poll is not None and not self.total:
                    with contextlib.suppress(Exception):
                        self.fraction = min(float(poll()), 1.0)
                self._paint(force=True)

        painter = threading.Thread(target=tick, name="xe-progress", daemon=True)
        painter.start()
        try:
            yield
        finally:
            stop.set()
            painter.join()

    def finish(self, summary: str | None = None) -> None:
        """The bar at 100%, and `summary` (what was done) on a line of its own."""
        if self.enabled:
            self.fraction = 1.0
            if self.total is not None and self.done != self.total:
                self.total = None
            with self._lock:
                self.stream.write("\r" + self.line() + "\x1b[K\n")
                if summary:
                    elapsed = time.monotonic() - self.start
                    self.stream.write(f"{summary}: {_human(self.done)} in {_clock(elapsed)} "
                                      f"({_human(self.done / max(elapsed, 1e-6))}/s)\n")
                self.stream.flush()


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while True:
        block = f.read(CHUNK) if not hasattr(f, "read1") else f.read1(CHUNK)  # type: ignore
        if not block:
            return
        yield block


# --- tasks ---------------------------------------------------------------------------------------

def _wait_task(ctx: Ctx, task: str, timeout: float = 3600.0) -> dict:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        rec = dict(ctx.call("task.get_record", task))  # type: ignore[arg-type]
        if rec.get("status") not in ("pending", "cancelling"):
            return rec
        if time.monotonic() > deadline:
            raise XeError("Error: the server did not finish the task in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def _task_failed(rec: dict) -> ApiFailure | None:
    if rec.get("status") == "success":
        return None
    info = list(rec.get("error_info") or [])
    if rec.get("status") == "cancelled" and not info:
        info = ["TASK_CANCELLED", rec.get("uuid", "")]
    return ApiFailure(info or ["INTERNAL_ERROR", f"task {rec.get('status')}"])


def _settled_failure(ctx: Ctx, task: str, wait: float = 2.0) -> ApiFailure | None:
    """After an HTTP-level failure: the task's error if the server finished it (soon)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            rec = dict(ctx.call("task.get_record", task))  # type: ignore[arg-type]
        except ApiFailure:
            return None
        if rec.get("status") not in ("pending", "cancelling"):
            return _task_failed(rec)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _cancel(ctx: Ctx, task: str) -> None:
    """Ctrl-C: cancel the task with a fresh connection (the transfer's may be mid-body)."""
    try:
        s = Session(ctx.endpoint, ref=ctx.session.ref)
        s.call("task.cancel", task)
        s.close()
    except (ApiFailure, XeError, OSError):
        pass


def _destroy(ctx: Ctx, task: str) -> None:
    try:
        ctx.call("task.destroy", task)
    except (ApiFailure, XeError):
        pass


def _http_error(resp: http.client.HTTPResponse, body: bytes) -> XeError:
    code = resp.getheader("X-XenAPI-Error")
    text = body[:300].decode(errors="replace").strip()
    if code:
        from .errors import describe
        parts = text.split()
        return XeError(describe(parts[0] if parts else code, parts[1:]))
    return XeError(f"Error: the server answered HTTP {resp.status} {resp.reason}"
                   f"{': ' + text if text else ''}")


_REDIRECTS = (301, 302, 303, 307, 308)


def _redirect(ctx: Ctx, resp: http.client.HTTPResponse) -> tuple[Endpoint, str] | None:
    """Where a 302 sends the request (a pool's host that holds the VM or the SR): that
    agent, and the path with its query; None when the answer is not a redirect."""
    if resp.status not in _REDIRECTS or not resp.getheader("Location"):
        return None
    url = urlsplit(resp.getheader("Location"))
    tls = url.scheme == "https"
    target = dataclasses.replace(ctx.endpoint, unix="", host=url.hostname or "", tls=tls,
                                 port=url.port or (443 if tls else 80))
    return target, f"{url.path}?{url.query}"


# --- downloads: vm-export, vdi-export ----------------------------------------------------------

class _TaskProgress:
    """The task's progress, read over a connection of its own (the transfer holds one)."""

    def __init__(self, ctx: Ctx, task: str) -> None:
        self.ctx, self.task = ctx, task
        self.session: Session | None = None

    def __call__(self) -> float:
        if self.session is None:
            self.session = Session(self.ctx.endpoint, ref=self.ctx.session.ref)
        return float(self.session.call("task.get_progress", self.task))  # type: ignore

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def _writable(filename: str) -> None:
    if filename != "-" and os.path.isdir(filename):
        raise XeError(f"Error: {filename} is a directory")


def _download(ctx: Ctx, task: str, path: str, query: dict[str, str], filename: str,
              label: str, what: str) -> int:
    """GET `path` into `filename` (- for stdout) and wait for `task`; the file is removed
    unless it all went well. Ctrl-C cancels the task on the server."""
    to_stdout = filename == "-"
    conn = ctx.endpoint.connection()
    out: BinaryIO | None = None
    ok = False
    progress = Progress(label, None)
    try:
        with contextlib.closing(_TaskProgress(ctx, task)) as poll, progress.ticking(poll):
            where, target = ctx.endpoint, f"{path}?{urlencode(query)}"
            for _ in range(4):          # a pool's master sends it to the host of the disks
                try:
                    conn.request("GET", target, headers={"User-Agent": "xe"})
                    resp = conn.getresponse()
                except (OSError, http.client.HTTPException) as e:
                    raise where.explain(e) from None
                hop = _redirect(ctx, resp)
                if hop is None:
                    break
                resp.read()
                conn.close()
                where, target = hop
                conn = where.connection()
            if resp.status != 200:
                body = resp.read()
                failure = _settled_failure(ctx, task)
                if failure:
                    raise failure
                raise _http_error(resp, body)
            length = resp.getheader("Content-Length")
            progress.total = int(length) if length and length.isdigit() else None
            out = sys.stdout.buffer if to_stdout else open(filename, "wb")
            try:
                buf = bytearray(CHUNK)      # one buffer, filled in place: no bytes per read
                with memoryview(buf) as view:
                    while n := resp.readinto(buf):
                        out.write(view[:n])
                        progress.update(n)
                out.flush()
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, BrokenPipeError) and to_stdout:
                    _cancel(ctx, task)
                    raise XeError("Error: the output pipe closed; export cancelled") from None
                failure = _settled_failure(ctx, task)
                if failure:
                    raise failure from None
                raise ctx.endpoint.explain(e) from None
            failure = _task_failed(_wait_task(ctx, task))
        if failure:
            raise failure
        progress.finish(f"Exported {what} to {'stdout' if to_stdout else filename}")
        ok = True
    except KeyboardInterrupt:
        _cancel(ctx, task)
        ctx.err.write("\nExport cancelled: the task was cancelled on the server\n")
        return 130
    finally:
        conn.close()
        if out is not None and not to_stdout:
            out.close()
            if not ok:
                with contextlib.suppress(OSError):
                    os.unlink(filename)
        _destroy(ctx, task)
    return 0


@command("vm-export", "Export a VM to a file (filename=- for stdout) as XVA.",
         reqd=("filename",), optn=("compress", "format", "preserve-power-state"),
         selector="VM", flags=("multiple",))
def vm_export(ctx: Ctx) -> int:
    keep_big_buffers()              # the copy loop reuses its MiB buffers
    filename = ctx.need("filename")
    ref, rec = select_one(ctx, "VM", ("filename", "compress", "format", "preserve-power-state"))
    compress = (ctx.get("compress") or "false").lower()
    if compress not in ("true", "false", "gzip", "zstd"):
        raise UsageError("compress= takes true, false, gzip or zstd", ctx.cmd.name)
    _writable(filename)
    task = str(ctx.call("task.create", f"Export of VM: {rec['uuid']}", "xe vm-export"))
    query = {"uuid": rec["uuid"], "session_id": ctx.session.ref, "task_id": task,
             "use_compression": compress}
    if ctx.get("format"):
        query["format"] = ctx.params["format"]
    if ctx.get("preserve-power-state"):
        query["preserve_power_state"] = ctx.params["preserve-power-state"]
    return _download(ctx, task, "/export", query, filename, f"Exporting {rec['name_label']}",
                     f"VM {rec['name_label']}")


def _disk_format(ctx: Ctx) -> str:
    fmt = (ctx.get("format") or "raw").lower()
    if fmt not in ("raw", "vhd"):
        raise UsageError("format= takes raw or vhd", ctx.cmd.name)
    return fmt


@command("vdi-export", "Export a VDI to a file (filename=- for stdout): format=raw (the whole "
         "disk) or vhd (a dynamic VHD of its allocated blocks; base=<VDI uuid> for only the "
         "blocks that differ from it).", reqd=("uuid", "filename"), optn=("format", "base"))
def vdi_export(ctx: Ctx) -> int:
    keep_big_buffers()
    filename = ctx.need("filename")
    vdi = ctx.by_uuid("VDI", ctx.need("uuid"))
    fmt = _disk_format(ctx)
    _writable(filename)
    name = str(ctx.call("VDI.get_name_label", vdi))
    task = str(ctx.call("task.create", f"Export of VDI: {ctx.params['uuid']}", "xe vdi-export"))
    query = {"vdi": ctx.params["uuid"], "format": fmt, "session_id": ctx.session.ref,
             "task_id": task}
    if ctx.get("base"):
        query["base"] = ctx.params["base"]
    return _download(ctx, task, "/export_raw_vdi", query, filename, f"Exporting {name}",
                     f"VDI {name}")


# --- uploads: vm-import, vdi-import -------------------------------------------------------------

def _send(conn: http.client.HTTPConnection, chunks: Iterator[bytes], chunked: bool,
          progress: Progress) -> None:
    for block in chunks:
        if not block:
            continue
        if chunked:
            conn.send(f"{len(block):X}\r\n".encode() + block + b"\r\n")
        else:
            conn.send(block)
        progress.update(len(block))
    if chunked:
        conn.send(b"0\r\n\r\n")


def _source(filename: str, *, xva_dirs: bool) -> tuple[Iterator[bytes], int | None, str]:
    """(the chunks, their total size if known, the progress label) of what to upload."""
    if filename == "-":
        return _file_chunks(sys.stdin.buffer), None, "Importing from stdin"
    path = Path(filename)
    if path.is_dir() and xva_dirs:
        if not (path / "ova.xml").is_file():
            raise XeError(f"Error: {filename} is a directory without ova.xml: not an XVA")
        from .xvadir import tar_size, tar_stream   # here: xva's tar code costs xe's start
        return tar_stream(path), tar_size(path), f"Importing {path.name}"
    if path.is_file():
        return _file_chunks(open(path, "rb")), path.stat().st_size, f"Importing {path.name}"
    if path.is_dir():
        raise XeError(f"Error: {filename} is a directory")
    raise XeError(f"Error: cannot read {filename}: no such file or directory")


def _upload_target(ctx: Ctx, path: str, query: dict[str, str]) -> tuple[Endpoint, str]:
    """Where an upload goes: asked first with an empty body (the probe every XenAPI client
    may send; nothing is written) when the server may send it to another host of its pool
    (an import into an SR, a raw import into an existing VDI)."""
    target = f"{path}?{urlencode(query)}"
    if path != "/import" and "vdi" not in query:
        return ctx.endpoint, target
    # (a probe names no task: the task is the real upload's)
    probe = f"{path}?{urlencode({k: v for k, v in query.items() if k != 'task_id'})}"
    where = ctx.endpoint
    for _ in range(4):
        conn = where.connection()
        try:
            conn.request("PUT", probe, body=b"", headers={"User-Agent": "xe",
                                                         "Content-Length": "0"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise where.explain(e) from None
        finally:
            conn.close()
        hop = _redirect(ctx, resp)
        if hop is None:
            break
        where, probe = hop              # the same path and query, on that host
    return where, target


def _upload(ctx: Ctx, task: str, path: str, query: dict[str, str], filename: str, *,
            xva_dirs: bool = False) -> dict | None:
    """PUT `filename` (- for stdin: chunked) to `path` and wait for `task`: its record, or
    None after Ctrl-C (the task cancelled on the server)."""
    chunks, size, label = _source(filename, xva_dirs=xva_dirs)
    where, target = _upload_target(ctx, path, query)
    conn = where.connection()
    progress = Progress(label, size)
    try:
        with progress.ticking():
            try:
                conn.putrequest("PUT", target, skip_accept_encoding=True)
                conn.putheader("User-Agent", "xe")
                conn.putheader("Content-Type", "application/octet-stream")
                if size is None:
                    conn.putheader("Transfer-Encoding", "chunked")
                else:
                    conn.putheader("Content-Length", str(size))
                conn.endheaders()
            except (OSError, http.client.HTTPException) as e:
                raise where.explain(e) from None
            send_error: BaseException | None = None
            try:
                _send(conn, chunks, size is None, progress)
            except (BrokenPipeError, ConnectionResetError) as e:
                send_error = e     # the server stopped reading: its answer says why
            try:
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                resp, body = None, b""
                send_error = send_error or e
            if resp is None or resp.status != 200:
                failure = _settled_failure(ctx, task)
                if failure:
                    raise failure
                if resp is not None:
                    raise _http_error(resp, body)
                raise where.explain(send_error)  # type: ignore[arg-type]
            rec = _wait_task(ctx, task)
        failure = _task_failed(rec)
        if failure:
            raise failure
        progress.finish(f"Imported {'stdin' if filename == '-' else filename}")
        return rec
    except KeyboardInterrupt:
        _cancel(ctx, task)
        ctx.err.write("\nImport cancelled: the task was cancelled on the server\n")
        return None
    finally:
        conn.close()
        _destroy(ctx, task)


@command("vm-import", "Import a VM from an XVA file (filename=- for stdin) or an XVA directory; "
         "prints the new VM uuid(s).", reqd=("filename",),
         optn=("sr-uuid", "preserve", "force"), flags=("force",))
def vm_import(ctx: Ctx) -> int:
    keep_big_buffers()
    filename = ctx.need("filename")
    _source(filename, xva_dirs=True)       # a missing file fails before any task exists
    sr_uuid = ctx.get("sr-uuid")
    if sr_uuid:
        ctx.by_uuid("SR", sr_uuid)   # a bad uuid fails here, clearly, before any upload
    task = str(ctx.call("task.create", "Import of VM", "xe vm-import"))
    query = {"session_id": ctx.session.ref, "task_id": task,
             "restore": "true" if ctx.flag("preserve") else "false",
             "force": "true" if ctx.flag("force") else "false"}
    if sr_uuid:
        query["sr_uuid"] = sr_uuid
    rec = _upload(ctx, task, "/import", query, filename, xva_dirs=True)
    if rec is None:
        return 130
    refs = _result_refs(str(rec.get("result", "")))
    ctx.out.write(",".join(str(ctx.call("VM.get_uuid", r)) for r in refs) + "\n")
    return 0


@command("vdi-import", "Write a file (filename=- for stdin) into an existing VDI: format=raw "
         "(the whole disk) or vhd (its blocks only); the VDI changes only if all of it arrived.",
         reqd=("uuid", "filename"), optn=("format",))
def vdi_import(ctx: Ctx) -> int:
    keep_big_buffers()
    filename = ctx.need("filename")
    _source(filename, xva_dirs=False)
    ctx.by_uuid("VDI", ctx.need("uuid"))
    fmt = _disk_format(ctx)
    task = str(ctx.call("task.create", f"Import into VDI: {ctx.params['uuid']}",
                        "xe vdi-import"))
    query = {"vdi": ctx.params["uuid"], "format": fmt, "session_id": ctx.session.ref,
             "task_id": task}
    return 0 if _upload(ctx, task, "/import_raw_vdi", query, filename) is not None else 130


@command("task-cancel", "Cancel a pending task (an export, an import, an Async call).",
         reqd=("uuid",))
def task_cancel(ctx: Ctx) -> None:
    ctx.call("task.cancel", ctx.by_uuid("task", ctx.need("uuid")))


def _result_refs(text: str) -> list[str]:
    text = text.strip()
    if not text:
        return []
    if text.startswith("<"):
        try:
            value = parse_value_text(text)
        except XMLRPCParseError as e:
            raise XeError(f"Error: cannot read the import task's result: {e}") from None
    else:
        value = text
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [str(v) for v in value]
    raise XeError(f"Error: unexpected import task result {text[:100]!r}")
