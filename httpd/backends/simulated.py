"""A simulated domain per running VM: a text console over RFB, a tiny shell, real disk reads.

It exists so that consoles, statistics and import/export have something real behind them on any
machine: the console is a real RFB server on loopback (console_proxy.TextConsoleServer), the
disk counters come from real reads of the VDI files, and suspend writes the domain's state into
a real file that resume reads back.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import logging
import os
import random
import tarfile
import time
from pathlib import Path
from concurrent.futures import Executor
from typing import Any, Callable, TypeVar

from console_proxy.keys import LineEditor
from console_proxy.screen import TextScreen
from console_proxy.server import TextConsoleServer
from console_proxy.vt100 import Vt100Server

from .base import (
    DiskSpec, Domain, DomainBackend, DomainConfig, DomainCounters, GuestEvent, NicSpec,
)

__all__ = ["SimulatedBackend", "SimulatedDomain", "ROOTFS_OFFSET"]

T = TypeVar("T")
log = logging.getLogger(__name__)

STATE_MAGIC = "xcp-httpd simulated domain state v1"
ROOTFS_OFFSET = 2**20          # where provisioning writes the root filesystem tar
_READ_SIZE = 64 * 1024
_TICK = 1.0
_REPORT_EVERY = 30           # ticks between guest agent reports
_VT100_BACKLOG = 2**20       # bytes queued for one vt100 reader before it is dropped


def _disk_facts(disk: DiskSpec) -> tuple[int, list[str], int]:
    """(size, files of the provisioned root filesystem (a tar at 1 MiB) if it holds one, bytes
    read). Blocking: for a thread."""
    size, files, nread = 0, [], 0
    try:
        with open(disk.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(ROOTFS_OFFSET)
            head = fh.read(_READ_SIZE)
            nread = len(head)
            if nread >= 512 and head[257:262] == b"ustar":
                fh.seek(ROOTFS_OFFSET)
                with tarfile.open(fileobj=fh, mode="r|") as tar:
                    files = [m.name for m in tar]
    except (OSError, tarfile.TarError):
        files = []
    return size, files, nread


def _read_some(disk: DiskSpec, pick: float) -> int:
    """Read one block at a place `pick` (0..1) of the disk, as a guest would; bytes read.
    Blocking: for a thread."""
    try:
        with open(disk.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= 0:
                return 0
            offset = int(pick * max(1, size // _READ_SIZE)) * _READ_SIZE
            return len(os.pread(fh.fileno(), _READ_SIZE, offset))
    except OSError:
        return 0


class SimulatedDomain(Domain):
    def __init__(self, backend: "SimulatedBackend", config: DomainConfig, domid: int) -> None:
        self.backend = backend
        self.config = config
        self.uuid = config.uuid
        self.domid = domid
        self.paused = False
        self.disks: dict[str, DiskSpec] = {d.device: d for d in config.disks if d.path}
        self.nics: dict[str, NicSpec] = {n.device: n for n in config.nics}
        self.cpu = [0.0] * max(1, config.vcpus)
        self.vbd_io: dict[str, list[int]] = {d: [0, 0] for d in self.disks}
        self.vif_io: dict[str, list[int]] = {n: [0, 0] for n in self.nics}
        self.started = time.time()
        self.load = 0.6            # busy while booting, idle later
        self.screen = TextScreen(80, 25)
        self.console = TextConsoleServer(self.screen, name=config.name,
                                         version=backend.rfb_version,
                                         on_text=self._on_text) if config.vnc else None
        self.editor = LineEditor(self._write, self._on_line)
        self.shell = "boot"        # boot -> login -> password -> shell
        self.user = ""
        self._tasks: set[asyncio.Task] = set()
        self._rng = random.Random(config.uuid)
        self.agent_up = False       # the in-guest agent runs once boot reached the login prompt
        self.vt100 = Vt100Server(self._vt100_greeting, on_input=self._on_text,
                                 backlog=_VT100_BACKLOG)

    # --- console and shell -----------------------------------------------------------------
    def _write(self, text: str) -> None:
        if self.console is not None:
            self.console.write(text)
        else:
            self.screen.write(text)
        # "replace": one character no terminal can show must not end the stream
        self.vt100.send(text.replace("\n", "\r\n").encode("utf-8", "replace"))

    def _vt100_greeting(self) -> bytes:
        """A new `vt100` reader sees the screen so far, then a plain stream of what is written."""
        lines = self.screen.text()
        while lines and not lines[-1].strip():
            lines.pop()
        return "\r\n".join(line.rstrip() for line in lines).encode("utf-8", "replace")

    def _on_text(self, text: str) -> None:
        if self.shell != "boot" and not self.paused:
            self.load = min(1.0, self.load + 0.05)
            self.editor.feed(text)

    def _prompt(self) -> None:
        if self.shell == "login":
            self._write(f"{self.hostname} login: ")
        elif self.shell == "password":
            self._write("Password: ")
        else:
            self._write(f"{self.user}@{self.hostname}:~# ")

    @property
    def hostname(self) -> str:
        name = "".join(c if c.isalnum() or c == "-" else "-" for c in self.config.name.lower())
        return name.strip("-")[:30] or "guest"

    def _on_line(self, line: str) -> None:
        if self.shell == "login":
            if line.strip():
                self.user = line.strip()
                self.shell = "password"
                self.editor.secret = True
        elif self.shell == "password":
            self.editor.secret = False
            self.shell = "shell"
            self._write(f"Last login: {time.ctime()} on tty1\n")
        else:
            self._run_command(line.strip())
            if self.shell != "shell":
                return
        self._prompt()

    def _run_command(self, cmd: str) -> None:
        argv = cmd.split()
        if not argv:
            return
        name, args = argv[0], argv[1:]
        vm_data = dict(self.config.vm_data)
        if name == "xenstore-read" and args:
            key = args[0]
            if key in vm_data:
                self._write(vm_data[key] + "\n")
            else:
                self._write(f"xenstore-read: couldn't read path {key}\n")
        elif name == "xenstore-ls":
            for k, v in sorted(vm_data.items()):
                self._write(f'{k} = "{v}"\n')
        elif name == "uname":
            self._write(f"Linux {self.hostname} 2.6.18-xen #1 SMP x86_64 GNU/Linux\n")
        elif name == "uptime":
            self._write(f"up {int(time.time() - self.started)} seconds\n")
        elif name == "ip":
            for dev, nic in sorted(self.nics.items()):
                self._write(f"eth{dev}: link/ether {nic.mac} mtu {nic.mtu}{_settings(nic)}\n")
        elif name == "echo":
            self._write(" ".join(args) + "\n")
        elif name in ("halt", "poweroff"):
            self._write("The system is going down for system halt NOW!\n")
            self.shell = "down"
            self.backend.on_guest_event(GuestEvent(self.uuid, "halt"))
        elif name == "reboot":
            self._write("The system is going down for reboot NOW!\n")
            self.shell = "down"
            self.backend.on_guest_event(GuestEvent(self.uuid, "reboot"))
        elif name == "exit" or name == "logout":
            self.shell = "login"
            self._write("\n")
        else:
            self._write(f"-bash: {name}: command not found\n")

    async def _boot(self) -> None:
        disks = sorted(self.disks.items())
        # the disks are read off the loop (a provisioned root filesystem is a tar to list)
        facts = await self.backend.blocking(lambda: [_disk_facts(d) for _, d in disks])
        for (dev, _), (_, _, nread) in zip(disks, facts):
            self._count(dev, read=nread)
        for line in self._boot_messages(disks, facts):
            self._write(line + "\n")
            await asyncio.sleep(0.02)
        self.shell = "login"
        self.load = 0.02
        self._write(f"\nDebian GNU/Linux 4.0 {self.hostname} tty1\n\n")
        self._prompt()
        self.agent_up = True
        self._report()

    def _boot_messages(self, disks: list[tuple[str, DiskSpec]],
                       facts: list[tuple[int, list[str], int]]) -> list[str]:
        cfg = self.config
        lines = [f"Started domain {cfg.name} (id={self.domid})",
                 "Linux version 2.6.18-xen (simulated) #1 SMP",
                 f"Memory: {cfg.memory // 1024}k, {cfg.vcpus} VCPU(s)"]
        lines += list(cfg.boot_lines)
        for (dev, disk), (size, files, _) in zip(disks, facts):
            lines.append(f"Registering block device {dev}: {size // 2**20} MiB"
                         + (" (ro)" if disk.read_only else ""))
            if files:
                lines.append(f"EXT3-fs: mounted filesystem on {dev}: {len(files)} files")
        for dev, nic in sorted(self.nics.items()):
            lines.append(f"eth{dev}: xen-netfront {nic.mac} mtu {nic.mtu}{_settings(nic)}")
        return lines

    # --- activity --------------------------------------------------------------------------
    def _count(self, device: str, read: int = 0, written: int = 0) -> None:
        io = self.vbd_io.setdefault(device, [0, 0])
        io[0] += read
        io[1] += written

    def _report(self) -> None:
        if self.agent_up:
            self.backend.on_guest_event(GuestEvent(self.uuid, "guest_metrics"))

    async def _activity(self) -> None:
        """Every tick: CPU time, a real read from each disk, a little network chatter."""
        last = time.monotonic()
        ticks = 0
        while True:
            await asyncio.sleep(_TICK)
            ticks += 1
            if ticks % _REPORT_EVERY == 0 and not self.paused:
                self._report()
            now = time.monotonic()
            dt, last = now - last, now
            if self.paused:
                continue
            for i in range(len(self.cpu)):
                self.cpu[i] += dt * min(1.0, self.load * self._rng.uniform(0.5, 1.5))
            self.load = max(0.02, self.load * 0.8)
            for dev, disk in list(self.disks.items()):
                pick = self._rng.random()
                self._count(dev, read=await self.backend.blocking(_read_some, disk, pick))
            for dev in list(self.nics):
                io = self.vif_io.setdefault(dev, [0, 0])
                io[0] += int(dt * self._rng.uniform(60, 200))
                io[1] += int(dt * self._rng.uniform(40, 120))

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def run(self, paused: bool, restored: dict | None = None) -> None:
        where = self.backend.socket_dir
        if where is None:
            if self.console is not None:
                await self.console.start("127.0.0.1", 0)
            await self.vt100.start("127.0.0.1", 0)
        else:       # per-domain sockets of mode 0600 (domids are unique while the agent runs)
            if self.console is not None:
                await self.console.start(port=None, path=str(where / f"{self.domid}.rfb"))
            await self.vt100.start(path=str(where / f"{self.domid}.vt100"))
        self.paused = paused
        if restored is None:
            self._spawn(self._boot())
        else:
            self._restore(restored)
            self._report()
        self._spawn(self._activity())

    # --- Domain interface ------------------------------------------------------------------
    @property
    def vnc_address(self):
        if self.console is None:
            return None
        if self.console.path is not None:
            return self.console.path
        return ("127.0.0.1", self.console.port) if self.console.port is not None else None

    @property
    def vt100_address(self):
        return self.vt100.address

    async def pause(self) -> None:
        self.paused = True

    async def unpause(self) -> None:
        self.paused = False

    def _state(self) -> dict:
        return {"magic": STATE_MAGIC, "uuid": self.uuid, "screen": self.screen.text(),
                "shell": self.shell, "user": self.user, "cpu": self.cpu,
                "vbd": self.vbd_io, "vif": self.vif_io, "uptime": time.time() - self.started,
                "saved": time.time()}

    def _restore(self, state: dict) -> None:
        self.shell = state["shell"] if state["shell"] in ("login", "password", "shell") else "login"
        self.user = state.get("user", "")
        self.cpu = [float(c) for c in state["cpu"]][: len(self.cpu)] + \
            [0.0] * max(0, len(self.cpu) - len(state["cpu"]))
        self.started = time.time() - float(state["uptime"])
        lines = [str(line) for line in state["screen"]]
        while lines and not lines[-1].strip():
            lines.pop()
        self.screen.clear()
        self._write("\n".join(line.rstrip() for line in lines))
        if self.shell == "shell":
            self._write("\n")
            self._prompt()
        self.agent_up = True

    async def save(self, path: str) -> None:
        data = json.dumps(self._state()).encode()

        def write() -> None:
            # Written over the start of the suspend VDI: a length header, then the JSON.
            with open(path, "r+b") as fh:
                fh.write(len(data).to_bytes(8, "big") + data)
                fh.flush()
                os.fsync(fh.fileno())
        await self.backend.blocking(write)

    async def suspend(self, path: str) -> None:
        await self.save(path)
        await self._stop()

    async def shutdown(self, clean: bool) -> None:
        if clean and self.shell != "down":
            self._write("\nINIT: Switching to runlevel: 0\nSystem halted.\n")
        await self._stop()

    async def reboot(self, clean: bool) -> None:
        self.domid = self.backend.take_domid()      # a reboot makes a new domain, as Xen's
        self.agent_up = False
        self.screen.clear()
        self.shell = "boot"
        self.started = time.time()
        self.cpu = [0.0] * len(self.cpu)
        self.load = 0.6
        self._spawn(self._boot())

    async def _stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.console is not None:
            await self.console.stop()
        await self.vt100.stop()
        self.backend._domains.pop(self.uuid, None)

    async def plug_disk(self, disk: DiskSpec) -> None:
        self.disks[disk.device] = disk
        self.vbd_io.setdefault(disk.device, [0, 0])
        self._write(f"\n[hotplug] block device {disk.device} attached\n")

    async def unplug_disk(self, device: str) -> None:
        self.disks.pop(device, None)
        self._write(f"\n[hotplug] block device {device} detached\n")

    async def change_cd(self, device: str, path: str) -> None:
        if path:
            self.disks[device] = DiskSpec(device, path, True, cdrom=True)
            self._write(f"\n[cdrom] {device}: disc inserted\n")
        else:
            self.disks.pop(device, None)
            self._write(f"\n[cdrom] {device}: disc ejected\n")

    async def plug_nic(self, nic: NicSpec) -> None:
        self.nics[nic.device] = nic
        self.vif_io.setdefault(nic.device, [0, 0])
        self._write(f"\n[hotplug] eth{nic.device} {nic.mac} mtu {nic.mtu}{_settings(nic)}"
                    " attached\n")
        self._report()

    async def unplug_nic(self, device: str) -> None:
        self.nics.pop(device, None)
        self._write(f"\n[hotplug] eth{device} detached\n")
        self._report()

    def guest_report(self) -> dict | None:
        if not self.agent_up:
            return None
        mem_kib = self.config.memory // 1024
        return {
            "os_version": {"name": "Debian GNU/Linux 4.0 (etch)", "distro": "debian",
                           "major": "4", "minor": "0", "uname": "2.6.18-xen"},
            "PV_drivers_version": {"major": "6", "minor": "0", "micro": "0",
                                   "build": "simulated"},
            "memory": {"total": str(mem_kib), "free": str(int(mem_kib * 0.6))},
            "nics": sorted(self.nics),
            "other": {"feature-shutdown": "1", "feature-suspend": "1", "has-vendor-device": "0"},
        }

    def counters(self) -> DomainCounters:
        mem = self.config.memory
        return DomainCounters(
            cpu_seconds=tuple(self.cpu), memory=mem, memory_target=mem,
            memory_internal_free=int(mem * 0.6) // 1024,
            vif={d: (io[0], io[1]) for d, io in self.vif_io.items() if d in self.nics},
            vbd={d: (io[0], io[1]) for d, io in self.vbd_io.items() if d in self.disks})

    def console_text(self) -> list[str]:
        return self.screen.text()


def _settings(nic: NicSpec) -> str:
    return "".join(f" {k}={v}" for k, v in nic.settings)


def _rootfs_tar(distro: str, name: str) -> bytes:
    """The "Debian root filesystem" the guide says provisioning writes: a small real tree."""
    buf = io.BytesIO()
    files = {
        "etc/debian_version": {"etch": "4.0\n", "lenny": "5.0\n"}.get(distro, "unknown\n"),
        "etc/hostname": name + "\n",
        "etc/fstab": "/dev/xvda1 / ext3 defaults 0 1\nproc /proc proc defaults 0 0\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n",
        "etc/issue": f"Debian GNU/Linux {distro} \\n \\l\n",
    }
    for src in ("/usr/share/common-licenses/GPL-2", "/etc/services", "/etc/protocols"):
        try:
            with open(src, "rb") as fh:
                files["usr/share/" + os.path.basename(src)] = fh.read()
        except OSError:
            pass
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(path)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_rootfs(path: str, distro: str, name: str) -> None:
    """Blocking (disk pool): the root filesystem tar at ROOTFS_OFFSET, synced (a disk too small
    to hold it stays blank)."""
    if os.path.getsize(path) <= ROOTFS_OFFSET * 2:
        return
    data = _rootfs_tar(distro, name)
    with open(path, "r+b") as fh:
        fh.seek(ROOTFS_OFFSET)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class SimulatedBackend(DomainBackend):
    name = "simulated"

    def __init__(self, on_guest_event: Callable[[GuestEvent], None], *,
                 rfb_version: tuple[int, int] = (3, 8), executor: Executor | None = None,
                 socket_dir: Path | None = None) -> None:
        super().__init__(on_guest_event)
        self.rfb_version = rfb_version
        self.socket_dir = socket_dir      # None: consoles on loopback TCP ports
        self.executor = executor
        self._domains: dict[str, SimulatedDomain] = {}
        self._next_domid = 1

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """File work of the guests (their disks, suspend images) on the backend's pool."""
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(fn, *args))

    def take_domid(self) -> int:
        domid, self._next_domid = self._next_domid, self._next_domid + 1
        return domid

    def _new(self, config: DomainConfig) -> SimulatedDomain:
        if config.uuid in self._domains:
            raise RuntimeError(f"domain {config.uuid} already running")
        dom = SimulatedDomain(self, config, self.take_domid())
        self._domains[config.uuid] = dom
        return dom

    async def start(self, config: DomainConfig, paused: bool = False) -> Domain:
        dom = self._new(config)
        try:
            await dom.run(paused)
        except BaseException:
            self._domains.pop(config.uuid, None)
            raise
        return dom

    async def resume(self, config: DomainConfig, state_path: str, paused: bool = False) -> Domain:
        state = await self.blocking(read_state, state_path)
        if state.get("uuid") != config.uuid:
            raise ValueError(f"{state_path} holds the state of another domain")
        dom = self._new(config)
        try:
            await dom.run(paused, restored=state)
        except BaseException:
            self._domains.pop(config.uuid, None)
            raise
        return dom

    def get(self, uuid: str) -> Domain | None:
        return self._domains.get(uuid)

    def provision_root(self, path: str, distro: str, name: str) -> None:
        write_rootfs(path, distro, name)

    async def close(self) -> None:
        for dom in list(self._domains.values()):
            await dom._stop()


def read_state(path: str) -> dict:
    """The state suspend() wrote; ValueError for anything else (a blank or corrupt file)."""
    with open(path, "rb") as fh:
        header = fh.read(8)
        if len(header) < 8:
            raise ValueError("no saved state")
        n = int.from_bytes(header, "big")
        if not 0 < n <= 16 * 2**20:
            raise ValueError("no saved state")
        data = fh.read(n)
    try:
        state = json.loads(data)
    except ValueError:
        raise ValueError("corrupt saved state") from None
    if not isinstance(state, dict) or state.get("magic") != STATE_MAGIC:
        raise ValueError("corrupt saved state")
    return state
