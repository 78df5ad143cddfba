"""One running QEMU process as a Domain: lifecycle over QMP, consoles, counters.

The agent holds three connections to the process: QMP (commands and events), the serial
port (relayed to `vt100` readers) and the guest agent's port. The process does not depend on
them: closing them (the agent stops) leaves the guest running, and `QemuBackend.attach` opens
them again. Guest-initiated power changes arrive as QMP events: SHUTDOWN (the guest powered
off: QEMU exits) and RESET (the guest rebooted); each is reported to the lifecycle unless the
agent itself asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import signal
import time
from pathlib import Path
from typing import Callable, ContextManager, Protocol

from ...model.errors import XenAPIError
from ..base import DiskSpec, Domain, DomainConfig, DomainCounters, GuestEvent, NicSpec
from .channels import GuestChannel, SerialRelay
from .cmdline import BALLOON_PATH, BALLOON_POLL, RunDir, disk_args, disk_id, nic_args, nic_id
from .qmp import QmpError, QmpEvent
from .qmp_client import QmpClient

__all__ = ["QemuDomain", "MIGRATION_MAGIC"]

log = logging.getLogger(__name__)

MIGRATION_MAGIC = b"QEVM"      # the first bytes of a QEMU migration stream
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_RESET_ECHO = 1.0             # seconds: a RESET this soon after one is the firmware's own
_PRESS_AGAIN = 5.0            # seconds between presses of the power button of a clean shutdown


class DomainHost(Protocol):
    """What a domain uses of the backend that made it."""
    socket_dir: Path
    vt100_backlog: int
    poll_interval: float
    clean_timeout: float
    on_guest_event: Callable[[GuestEvent], None]

    def take_domid(self) -> int: ...
    def write_facts(self, dom: "QemuDomain") -> None: ...
    def alive(self, dom: "QemuDomain") -> bool: ...
    def forget(self, dom: "QemuDomain") -> None: ...
    def expect_reset(self, dom: "QemuDomain") -> ContextManager[None]: ...
    def expecting_reset(self, dom: "QemuDomain") -> bool: ...
    async def tap_for(self, dom: "QemuDomain", nic: NicSpec) -> NicSpec: ...
    def drop_tap(self, nic: NicSpec) -> None: ...
    def tap_counters(self, nic: NicSpec) -> tuple[int, int]: ...


class QemuDomain(Domain):
    def __init__(self, backend: DomainHost, config: DomainConfig, run: RunDir,
                 domid: int, pid: int) -> None:
        self.backend = backend
        self.config = config
        self.uuid = config.uuid
        self.run = run
        self.domid = domid
        self.pid = pid
        self.paused = False
        self.disks: dict[str, DiskSpec] = {d.device: d for d in config.disks}
        self.nics: dict[str, NicSpec] = {n.device: n for n in config.nics}
        self.qmp: QmpClient | None = None
        self.serial = SerialRelay(str(run.serial), backlog=backend.vt100_backlog)
        self.guest = GuestChannel(str(run.guest), self._on_report)
        self._stopping = False          # the agent asked the domain to end: no guest event
        self._resets: asyncio.Queue[bool] = asyncio.Queue()   # RESET events (guest=?)
        self._guest_reset = False       # the guest rebooted itself (reboot() keeps it)
        self._last_reset = float("-inf")
        self._vcpu_threads: list[int] = []
        self._blockstats: dict[str, tuple[int, int]] = {}
        self._balloon: tuple[int, int] | None = None     # (size, guest's free bytes or -1)
        self._tasks: set[asyncio.Task] = set()

    # --- connections ---------------------------------------------------------------------
    async def connect(self) -> None:
        """QMP, the serial port and the guest port, then the counters poller."""
        self.qmp = await QmpClient.connect(str(self.run.qmp), on_event=self._on_event)
        status = await self.qmp.execute("query-status")
        self.paused = not status.get("running", False)
        cpus = await self.qmp.execute("query-cpus-fast")
        self._vcpu_threads = [int(c.get("thread-id", 0)) for c in cpus]
        with contextlib.suppress(QmpError):      # a QEMU started before it had a balloon
            await self.qmp.execute("qom-set", path=BALLOON_PATH,
                                   property="guest-stats-polling-interval",
                                   value=BALLOON_POLL)
        await self.serial.start(str(self.backend.socket_dir / f"{self.uuid}.vt100"))
        await self.guest.start()
        for sock in (self.run.qmp, self.run.vnc, self.run.serial, self.run.guest):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(sock, 0o600)
        self._spawn(self._watch())
        self._spawn(self._poll())

    def _spawn(self, coro) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _watch(self) -> None:
        """The QMP connection ends when QEMU exits: a guest that powered off, or a crash."""
        assert self.qmp is not None
        await self.qmp.wait_closed()
        if not self._stopping:
            log.warning("QEMU of domain %s (pid %d) exited", self.uuid, self.pid)
            self.backend.on_guest_event(GuestEvent(self.uuid, "halt"))

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(ConnectionError, QmpError):
                await self.refresh_counters()
            await asyncio.sleep(self.backend.poll_interval)

    def _on_event(self, ev: QmpEvent) -> None:
        log.debug("domain %s: QMP event %s %s", self.uuid, ev.name, ev.data)
        if ev.name == "SHUTDOWN" and not self._stopping:
            self._stopping = True         # QEMU exits; _watch need not say it again
            self.backend.on_guest_event(GuestEvent(self.uuid, "halt"))
        elif ev.name == "RESET":
            # the firmware resets once more right after a reset: one reboot, not two
            now = time.monotonic()
            again, self._last_reset = now - self._last_reset < _RESET_ECHO, now
            if again:
                return
            guest = bool(ev.data.get("guest"))
            self._resets.put_nowait(guest)
            if guest and not self._stopping and not self.backend.expecting_reset(self):
                self._guest_reset = True
                self.backend.on_guest_event(GuestEvent(self.uuid, "reboot"))
        elif ev.name == "STOP":
            self.paused = True
        elif ev.name == "RESUME":
            self.paused = False

    def _on_report(self, report: dict) -> None:
        self.backend.on_guest_event(GuestEvent(self.uuid, "guest_metrics"))

    async def _qmp(self, name: str, **args):
        if self.qmp is None:
            raise XenAPIError("INTERNAL_ERROR", f"domain {self.uuid} has no QMP connection")
        try:
            return await self.qmp.execute(name, **args)
        except ConnectionError:
            raise XenAPIError("INTERNAL_ERROR", f"QEMU of domain {self.uuid} is gone") from None
        except QmpError as e:
            raise XenAPIError("INTERNAL_ERROR", f"QEMU refused {name}: {e}") from None

    # --- Domain interface ------------------------------------------------------------------
    @property
    def vnc_address(self):
        return str(self.run.vnc) if self.config.vnc else None

    @property
    def vt100_address(self):
        return self.serial.server.address

    async def pause(self) -> None:
        await self._qmp("stop")
        self.paused = True

    async def unpause(self) -> None:
        await self._qmp("cont")
        self.paused = False

    async def _migrate_to(self, path: str) -> None:
        """The domain's whole state (a QEMU migration stream) written over the start of
        `path`, synced; the domain is left stopped. If that fails, a domain that ran runs on."""
        was_paused = self.paused
        await self._qmp("stop")
        try:
            sink = f"exec:dd of={shlex.quote(path)} bs=1M conv=notrunc,fsync status=none"
            await self._qmp("migrate", uri=sink)
            while True:
                info = await self._qmp("query-migrate")
                status = info.get("status")
                if status == "completed":
                    return
                if status in ("failed", "cancelled"):
                    raise XenAPIError("INTERNAL_ERROR", f"saving the domain's state failed: "
                                      f"{info.get('error-desc', status)}")
                await asyncio.sleep(0.05)
        except BaseException:
            if not was_paused:
                with contextlib.suppress(XenAPIError):
                    await self.unpause()
            raise

    async def save(self, path: str) -> None:
        was_paused = self.paused
        await self._migrate_to(path)
        if not was_paused:
            await self.unpause()

    async def suspend(self, path: str) -> None:
        await self._migrate_to(path)
        await self._end(clean=False)

    async def shutdown(self, clean: bool) -> None:
        if clean and not self._stopping and self.qmp is not None and self.qmp.closed is None:
            self._stopping = True
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.backend.clean_timeout
            # the button again every few seconds: a guest still booting (no acpid yet) drops
            # a press, as a person pressing it would find, and presses again
            while True:
                await self._qmp("system_powerdown")
                left = deadline - loop.time()
                try:
                    async with asyncio.timeout(min(_PRESS_AGAIN, max(left, 0.0))):
                        await self.qmp.wait_closed()
                    break
                except TimeoutError:
                    if loop.time() < deadline:
                        continue
                    self._stopping = False
                    raise XenAPIError("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", self.uuid) from None
        await self._end(clean=False)

    async def reboot(self, clean: bool) -> None:
        if self._guest_reset:           # the guest rebooted itself: the reset is done
            self._guest_reset = False
        else:
            while not self._resets.empty():
                self._resets.get_nowait()
            with self.backend.expect_reset(self):
                if clean:
                    # Ctrl-Alt-Del: the guest's init reboots (as xapi's clean reboot asks)
                    await self._qmp("send-key", keys=[{"type": "qcode", "data": k}
                                                      for k in ("ctrl", "alt", "delete")])
                else:
                    await self._qmp("system_reset")
                try:
                    async with asyncio.timeout(self.backend.clean_timeout if clean else 10):
                        await self._resets.get()
                except TimeoutError:
                    raise XenAPIError("VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT", self.uuid) from None
        self.domid = self.backend.take_domid()       # a reboot makes a new domain, as Xen's
        self.backend.write_facts(self)

    async def _end(self, clean: bool) -> None:
        """QEMU quits (or is killed), then the agent's side goes."""
        self._stopping = True
        if self.qmp is not None and self.qmp.closed is None:
            with contextlib.suppress(ConnectionError, QmpError):
                await self.qmp.execute("quit")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self.qmp.wait_closed()
        if self.backend.alive(self):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        await self.detach()
        for nic in self.nics.values():
            self.backend.drop_tap(nic)
        shutil.rmtree(self.run.path, ignore_errors=True)
        self.backend.forget(self)

    async def detach(self) -> None:
        """Close the agent's connections; the process runs on (the agent is stopping)."""
        self._stopping = True
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.serial.stop()
        await self.guest.stop()
        if self.qmp is not None:
            await self.qmp.close()

    async def plug_disk(self, disk: DiskSpec) -> None:
        blockdev, device = disk_args(disk)
        if blockdev is None:              # an empty CD drive
            await self._qmp("device_add", **device)
            self.disks[disk.device] = disk
            return
        await self._qmp("blockdev-add", **blockdev)
        try:
            await self._qmp("device_add", **device)
        except XenAPIError:
            with contextlib.suppress(XenAPIError):
                await self._qmp("blockdev-del", **{"node-name": blockdev["node-name"]})
            raise
        self.disks[disk.device] = disk

    async def unplug_disk(self, device: str) -> None:
        node = disk_id(device)
        await self._qmp("device_del", id=node)
        # the guest acknowledges (ACPI eject); then the node can go
        for _ in range(100):
            devices = await self._qmp("query-block")
            if not any(node in (b.get("qdev") or "") for b in devices):
                break
            await asyncio.sleep(0.1)
        with contextlib.suppress(XenAPIError):
            await self._qmp("blockdev-del", **{"node-name": node})
        self.disks.pop(device, None)

    async def change_cd(self, device: str, path: str) -> None:
        ident = disk_id(device)
        if path:
            await self._qmp("blockdev-change-medium", id=ident, filename=path, format="raw",
                            **{"read-only-mode": "read-only"})
            self.disks[device] = DiskSpec(device, path, True, cdrom=True)
        else:
            await self._qmp("eject", id=ident, force=True)
            self.disks[device] = DiskSpec(device, "", True, cdrom=True)

    async def plug_nic(self, nic: NicSpec) -> None:
        nic = await self.backend.tap_for(self, nic)
        netdev, device = nic_args(nic)
        await self._qmp("netdev_add", **netdev)
        await self._qmp("device_add", **device)
        self.nics[nic.device] = nic

    async def unplug_nic(self, device: str) -> None:
        ident = nic_id(device)
        await self._qmp("device_del", id=ident)
        with contextlib.suppress(XenAPIError):
            await self._qmp("netdev_del", id=ident)
        nic = self.nics.pop(device, None)
        if nic is not None:
            self.backend.drop_tap(nic)

    # --- counters and the guest agent ------------------------------------------------------
    async def _refresh_balloon(self) -> None:
        """The balloon's size and the free memory its guest driver reports (-1, or no
        device: unknown; the guest agent's figure stands)."""
        assert self.qmp is not None
        try:
            actual = int((await self.qmp.execute("query-balloon")).get("actual", 0))
            got = await self.qmp.execute("qom-get", path=BALLOON_PATH, property="guest-stats")
        except (QmpError, ValueError, TypeError):
            self._balloon = None
            return
        free = int((got.get("stats") or {}).get("stat-free-memory", -1))
        self._balloon = (actual, free if free >= 0 and got.get("last-update") else -1)

    async def refresh_counters(self) -> None:
        await self._refresh_balloon()
        stats = await self._qmp("query-blockstats")
        found = {}
        for entry in stats:
            qdev = entry.get("qdev") or ""
            for dev in self.disks:
                if f"/{disk_id(dev)}/" in qdev or qdev.endswith(disk_id(dev)):
                    s = entry.get("stats", {})
                    found[dev] = (int(s.get("rd_bytes", 0)), int(s.get("wr_bytes", 0)))
        self._blockstats = found

    def _cpu_seconds(self) -> tuple[float, ...]:
        out = []
        for tid in self._vcpu_threads:
            try:
                with open(f"/proc/{self.pid}/task/{tid}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                out.append((int(fields[11]) + int(fields[12])) / _CLK_TCK)
            except (OSError, IndexError, ValueError):
                out.append(0.0)
        return tuple(out) or (0.0,)

    def counters(self) -> DomainCounters:
        mem = self.config.memory
        report = self.guest.latest or {}
        free = int(report.get("memfree", "0") or 0) if str(report.get("memfree", "0")).isdigit() \
            else 0
        target = mem
        if self._balloon is not None:          # the balloon driver's figures, where present
            actual, balloon_free = self._balloon
            target = actual or mem
            if balloon_free >= 0:
                free = balloon_free // 1024
        vif = {}
        for dev, nic in self.nics.items():
            vif[dev] = self.backend.tap_counters(nic)
        return DomainCounters(cpu_seconds=self._cpu_seconds(), memory=mem, memory_target=target,
                              memory_internal_free=free, vif=vif,
                              vbd={d: v for d, v in self._blockstats.items() if d in self.disks})

    def guest_report(self) -> dict | None:
        report = self.guest.latest
        if report is None:
            return None
        by_mac = {nic.mac.lower(): dev for dev, nic in self.nics.items()}
        networks = {}
        for mac, ip in report.get("nics", []):
            dev = by_mac.get(mac)
            if dev is not None and ip:
                networks[f"{dev}/ip"] = ip
        total = report.get("memtotal", "0")
        return {
            "os_version": {"name": report.get("os", ""), "uname": report.get("uname", ""),
                           "distro": "busybox"},
            "PV_drivers_version": {"major": "1", "minor": "0", "micro": "0",
                                   "build": "xcp-guest-agent"},
            "memory": {"total": total, "free": report.get("memfree", "0")},
            "nics": sorted(by_mac.values()),
            "networks": networks,
            "other": {"feature-shutdown": "1", "feature-suspend": "1",
                      "uptime": report.get("uptime", "")},
        }

    def console_text(self) -> list[str]:
        return self.serial.text()

    def facts(self) -> dict:
        """What the run directory keeps for the next agent (see QemuBackend.attach)."""
        return {"uuid": self.uuid, "domid": self.domid, "pid": self.pid,
                "taps": {dev: nic.tap for dev, nic in self.nics.items() if nic.tap}}
