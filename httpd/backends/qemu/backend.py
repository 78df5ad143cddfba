"""The QEMU backend: one `qemu-system-x86_64` process per running VM, driven over QMP.

Each domain has a run directory in the data directory (`vm/<uuid>/`): its QMP, VNC, serial
and guest-agent sockets (mode 0600, in a directory only the agent's user reaches), QEMU's pid
file and log, and `domain.json` (domid, pid) for the next agent. QEMU daemonizes into its own
session, so the domains outlive the agent (`domains_outlive_agent`): stopping the agent, or a
kill -9, leaves them running, and `attach` at the next start finds each one again, checking the
pid really is that domain's QEMU.

Booting, as xapi does it for a PV guest: `pygrub` reads the kernel the guest's own /boot names
from its first bootable disk; an empty bootloader boots PV_kernel/PV_ramdisk/PV_args as paths
in the control domain; HVM guests (and PV ones with neither) boot from disk or CD via the BIOS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import shlex
import shutil
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ...model.errors import XenAPIError
from ..base import Domain, DomainBackend, DomainConfig, GuestEvent, NicSpec
from . import accel as accel_probe
from . import guest, pygrub
from .cmdline import RunDir, argv
from .domain import MIGRATION_MAGIC, QemuDomain
from .network import NetworkError, Networks, available as bridges_available
from .network import counters as tap_counters

__all__ = ["QemuBackend", "qemu_installed", "QEMU"]

T = TypeVar("T")
log = logging.getLogger(__name__)

QEMU = accel_probe.QEMU
_SOCKET_PATH_MAX = 107           # sun_path, less its NUL
_CONTROL_DOMAIN_RESERVE = 256 * 2**20


def qemu_installed(qemu: str = QEMU) -> bool:
    return shutil.which(qemu) is not None


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    return out


class QemuBackend(DomainBackend):
    domains_outlive_agent = True
    name = "qemu"

    def __init__(self, on_guest_event: Callable[[GuestEvent], None], *, data_dir: Path,
                 socket_dir: Path, accel: str = "auto", executor: Executor | None = None,
                 qemu: str = QEMU, clean_timeout: float = 120.0, poll_interval: float = 5.0,
                 vt100_backlog: int = 2**20, network: str = "auto") -> None:
        super().__init__(on_guest_event)
        self.data_dir = data_dir
        self.run_root = data_dir / "vm"
        self.guest_dir = data_dir / "guest"
        self.socket_dir = socket_dir
        self.accel_choice = accel
        self.accel = "tcg"
        self.executor = executor
        self.qemu = qemu
        self.clean_timeout = clean_timeout
        self.poll_interval = poll_interval
        self.vt100_backlog = vt100_backlog
        self._domains: dict[str, QemuDomain] = {}
        self._starting: set[str] = set()
        self._expect_reset: set[str] = set()
        self._next_domid = 1
        self.network_choice = network
        self.networks: Networks | None = None      # None: QEMU's user-mode networks

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, functools.partial(fn, *args))

    # --- start-up --------------------------------------------------------------------------
    async def open(self) -> None:
        """Check the run directory's socket paths fit, get the guest kernel (fetched once
        into the data directory) and choose the accelerator."""
        longest = self.run_root / ("0" * 36) / "serial.sock"
        if len(str(longest.absolute())) > _SOCKET_PATH_MAX:
            raise RuntimeError(f"the data directory's path is too long for QEMU's sockets "
                               f"({len(str(longest.absolute()))} > {_SOCKET_PATH_MAX} bytes "
                               f"with vm/<uuid>/serial.sock): choose a shorter --data-dir")
        self.run_root = self.run_root.absolute()
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.run_root.chmod(0o700)
        for facts in self.run_root.glob("*/domain.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                self._next_domid = max(self._next_domid,
                                       int(json.loads(facts.read_text())["domid"]) + 1)
        kernel = None
        try:
            kernel = await self.blocking(guest.fetch_kernel, self.guest_dir / "kernel")
        except guest.GuestError as e:
            log.warning("no guest kernel (%s): provisioning a bootable guest will fail", e)
        if self.accel_choice == "auto":
            self.accel = await self.blocking(self._probe, kernel) if kernel else "tcg"
        else:
            self.accel = self.accel_choice
        bridges = self.network_choice == "bridge" or (
            self.network_choice == "auto" and bridges_available()
            and shutil.which("dnsmasq") is not None)
        if bridges:
            self.networks = Networks(self.run_root)
        log.warning("QEMU backend: %s, accelerator %s, guest networks on %s", self.qemu,
                    self.accel, "Linux bridges with DHCP" if bridges
                    else "QEMU's user-mode networks")

    def _probe(self, kernel: Path) -> str:
        """The probe's answer, kept for this boot of the host (it costs seconds)."""
        cache = self.data_dir / "accel.json"
        try:
            boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot_id = ""
        with contextlib.suppress(OSError, ValueError, KeyError):
            kept = json.loads(cache.read_text())
            if kept["boot_id"] == boot_id and kept["accel"] in ("kvm", "tcg"):
                return kept["accel"]
        chosen = accel_probe.probe(kernel, qemu=self.qemu)
        with contextlib.suppress(OSError):
            cache.write_text(json.dumps({"boot_id": boot_id, "accel": chosen}))
        return chosen

    # --- what domains call back ---------------------------------------------------------
    def take_domid(self) -> int:
        domid, self._next_domid = self._next_domid, self._next_domid + 1
        return domid

    def write_facts(self, dom: QemuDomain) -> None:
        tmp = dom.run.facts.with_suffix(".tmp")
        tmp.write_text(json.dumps(dom.facts()))
        os.replace(tmp, dom.run.facts)

    def alive(self, dom: QemuDomain) -> bool:
        return _is_qemu_of(dom.pid, dom.run)

    def forget(self, dom: QemuDomain) -> None:
        if self._domains.get(dom.uuid) is dom:
            del self._domains[dom.uuid]

    @contextlib.contextmanager
    def expect_reset(self, dom: QemuDomain) -> Iterator[None]:
        self._expect_reset.add(dom.uuid)
        try:
            yield
        finally:
            self._expect_reset.discard(dom.uuid)

    def expecting_reset(self, dom: QemuDomain) -> bool:
        return dom.uuid in self._expect_reset

    def _tap(self, domid: int, nic: NicSpec) -> NicSpec:
        """`nic` on a new tap device on its network's bridge (blocking); unchanged when the
        backend uses user-mode networks or the network has no bridge."""
        if self.networks is None or not nic.network:
            return nic
        name = f"vif{domid}.{nic.device}"[:15]
        try:
            self.networks.add_tap(name, nic.network, nic.mtu)
        except NetworkError as e:
            raise XenAPIError("HOST_CANNOT_ATTACH_NETWORK", "", nic.network, str(e)) from None
        return dataclasses.replace(nic, tap=name)

    async def tap_for(self, dom: QemuDomain, nic: NicSpec) -> NicSpec:
        return await self.blocking(self._tap, dom.domid, nic)

    def drop_tap(self, nic: NicSpec) -> None:
        if self.networks is not None and nic.tap:
            self.networks.remove_tap(nic.tap)

    def tap_counters(self, nic: NicSpec) -> tuple[int, int]:
        """(rx, tx) of the guest: what the tap sent is what the guest received."""
        if not nic.tap:
            return (0, 0)
        received, sent = tap_counters(nic.tap)
        return sent, received

    # --- domains -------------------------------------------------------------------------
    def _run_dir(self, uuid: str) -> RunDir:
        return RunDir(self.run_root / uuid)

    def _check_memory(self, config: DomainConfig) -> None:
        info = _meminfo()
        running = sum(d.config.memory for d in self._domains.values())
        free = min(info.get("MemAvailable", 0),
                   info.get("MemTotal", 0) - _CONTROL_DOMAIN_RESERVE - running)
        if config.memory > free:
            raise XenAPIError("HOST_NOT_ENOUGH_FREE_MEMORY", str(config.memory),
                              str(max(0, free)))

    def _boot(self, config: DomainConfig, run: RunDir) -> DomainConfig:
        """The configuration QEMU boots: pygrub's kernel copied into the run directory, a
        direct kernel checked, else the BIOS. Blocking."""
        fail = functools.partial(XenAPIError, "BOOTLOADER_FAILED", config.uuid)
        if config.hvm:
            return config
        if config.bootloader == "pygrub":
            disks = [d for d in config.disks if not d.cdrom and d.path]
            if not disks:
                raise fail("pygrub: the VM has no disk to boot from")
            try:
                kernel, initrd, args = pygrub.extract(disks[0].path, run.path)
            except pygrub.BootError as e:
                raise fail(f"pygrub: {e}") from None
            extra = f" {config.kernel_args}" if config.kernel_args else ""
            return dataclasses.replace(config, kernel=str(kernel),
                            ramdisk=str(initrd) if initrd else "", kernel_args=args + extra)
        if config.bootloader:
            raise fail(f"the bootloader {config.bootloader!r} is not available with QEMU")
        if config.kernel:
            for what, path in (("PV_kernel", config.kernel), ("PV_ramdisk", config.ramdisk)):
                if path and not os.path.isfile(path):
                    raise fail(f"{what} {path}: no such file in the control domain")
            return config
        return dataclasses.replace(config, boot_order=config.boot_order or "c")

    async def _spawn(self, config: DomainConfig, *, incoming: bool) -> QemuDomain:
        if not qemu_installed(self.qemu):
            raise XenAPIError("INTERNAL_ERROR", f"{self.qemu} is not installed "
                              "(Debian's qemu-system-x86)")
        for disk in config.disks:
            if disk.path and not os.path.exists(disk.path):
                raise XenAPIError("VDI_MISSING", "", disk.path)
        self._check_memory(config)
        run = self._run_dir(config.uuid)
        if config.uuid in self._domains or config.uuid in self._starting:
            raise XenAPIError("VM_BAD_POWER_STATE", config.uuid, "halted", "running")
        self._starting.add(config.uuid)
        try:
            await self.blocking(_fresh_dir, run.path)
            booted = await self.blocking(self._boot, config, run)
            domid = self.take_domid()
            nics = []
            try:
                for nic in booted.nics:
                    nics.append(await self.blocking(self._tap, domid, nic))
            except BaseException:
                for nic in nics:
                    self.drop_tap(nic)
                raise
            booted = dataclasses.replace(booted, nics=tuple(nics))
            cmd = argv(booted, run, accel=self.accel, qemu=self.qemu, incoming=incoming)
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, cwd=str(run.path))
            _, err = await proc.communicate()
            if proc.returncode != 0:
                for nic in booted.nics:
                    self.drop_tap(nic)
                raise XenAPIError("INTERNAL_ERROR", "QEMU did not start: "
                                  + err.decode(errors="replace").strip()[-400:])
            pid = int(run.pidfile.read_text().strip())
            dom = QemuDomain(self, booted, run, domid, pid)
            try:
                await dom.connect()
            except BaseException:
                await dom._end(clean=False)
                raise
            self._domains[config.uuid] = dom
            self.write_facts(dom)
            return dom
        except BaseException:
            if config.uuid not in self._domains:
                _kill_from_pidfile(run)
                await self.blocking(shutil.rmtree, run.path, True)
            raise
        finally:
            self._starting.discard(config.uuid)

    async def start(self, config: DomainConfig, paused: bool = False) -> Domain:
        dom = await self._spawn(config, incoming=False)
        if not paused:
            try:
                await dom.unpause()
            except BaseException:
                await dom._end(clean=False)
                raise
        return dom

    async def resume(self, config: DomainConfig, state_path: str, paused: bool = False) -> Domain:
        def magic() -> bytes:
            with open(state_path, "rb") as fh:
                return fh.read(len(MIGRATION_MAGIC))
        if await self.blocking(magic) != MIGRATION_MAGIC:
            raise ValueError("no saved QEMU state in the suspend image")
        dom = await self._spawn(config, incoming=True)
        try:
            source = f"exec:cat {shlex.quote(state_path)}"
            await dom._qmp("migrate-incoming", uri=source)
            while True:
                status = (await dom._qmp("query-status")).get("status")
                if status != "inmigrate":
                    break
                await asyncio.sleep(0.05)
            if status not in ("paused", "postmigrate", "prelaunch", "running"):
                raise XenAPIError("INTERNAL_ERROR", f"the saved state did not load ({status})")
            if not paused:
                await dom.unpause()
            else:
                dom.paused = True
        except BaseException:
            await dom._end(clean=False)
            raise
        return dom

    async def attach(self, config: DomainConfig, paused: bool) -> Domain:
        run = self._run_dir(config.uuid)
        try:
            facts = json.loads(run.facts.read_text())
            pid, domid = int(facts["pid"]), int(facts["domid"])
        except (OSError, ValueError, KeyError):
            raise RuntimeError("no running QEMU was recorded for it") from None
        taps = facts.get("taps", {})
        if not _is_qemu_of(pid, run):          # its taps and run directory go with it
            for tap in taps.values():
                self.drop_tap(NicSpec("", "", tap=tap))
            await self.blocking(shutil.rmtree, run.path, True)
            raise RuntimeError(f"its QEMU (pid {pid}) is no longer running")
        nics = tuple(dataclasses.replace(n, tap=taps.get(n.device, "")) for n in config.nics)
        dom = QemuDomain(self, dataclasses.replace(config, nics=nics), run, domid, pid)
        try:
            await dom.connect()
        except BaseException:
            await dom.detach()
            raise
        self._domains[config.uuid] = dom
        return dom

    def get(self, uuid: str) -> Domain | None:
        return self._domains.get(uuid)

    def provision_root(self, path: str, distro: str, name: str) -> None:
        kernel_dir = self.guest_dir / "kernel"
        guest.fetch_kernel(kernel_dir)
        hostname = "".join(c if c.isalnum() or c == "-" else "-" for c in name.lower())
        guest.build_rootfs(Path(path), hostname=hostname.strip("-")[:30] or "guest",
                           kernel_dir=kernel_dir, in_place=True)

    async def close(self) -> None:
        """The agent stops; the domains run on (the next agent attaches to them)."""
        for dom in list(self._domains.values()):
            await dom.detach()
        self._domains.clear()


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)


def _is_qemu_of(pid: int, run: RunDir) -> bool:
    """Whether `pid` is the QEMU of that run directory (a reused pid is not)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(run.qmp).encode() in cmdline


def _kill_from_pidfile(run: RunDir) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(run.pidfile.read_text().strip())
        if _is_qemu_of(pid, run):
            os.kill(pid, 9)
