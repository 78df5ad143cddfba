"""The domain backend interface: what the VM lifecycle needs from a hypervisor.

Small on purpose (start, pause, unpause, suspend to a file, resume, shutdown, reboot, hot plug,
console endpoint, statistics counters) so the same API code drives the simulated backend that
runs everywhere and a real one later.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["DiskSpec", "NicSpec", "DomainConfig", "DomainCounters", "Domain", "DomainBackend",
           "GuestEvent"]


@dataclass(frozen=True)
class DiskSpec:
    device: str          # "xvda", or the userdevice number when no name was chosen
    path: str            # the VDI file ("" for an empty CD drive)
    read_only: bool = False
    cdrom: bool = False  # a VBD of type CD (an IDE CD-ROM drive)
    bootable: bool = False


@dataclass(frozen=True)
class NicSpec:
    device: str          # "0", "1", ... as VIF.device
    mac: str
    mtu: int = 1500
    settings: tuple[tuple[str, str], ...] = ()   # validated ethtool-*/promiscuous keys
    network: str = ""    # the network's bridge name ("" when it has none)
    tap: str = ""        # the tap device the backend made for it, once it did


@dataclass(frozen=True)
class DomainConfig:
    uuid: str
    name: str
    vcpus: int = 1
    memory: int = 256 * 2**20
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    vm_data: tuple[tuple[str, str], ...] = ()      # xenstore vm-data/* only (the guide)
    vnc: bool = True                                # False: other-config:disable_pv_vnc
    boot_lines: tuple[str, ...] = ()                # installer messages (install-repository...)
    bootloader: str = ""          # PV_bootloader: "pygrub" reads the kernel from the disk
    kernel: str = ""              # PV_kernel / PV_ramdisk / PV_args: a direct kernel boot
    ramdisk: str = ""
    kernel_args: str = ""
    boot_order: str = ""          # HVM_boot_params order= ("dc": CD, then disk) via the BIOS
    hvm: bool = False             # HVM_boot_policy "BIOS order"
    platform: tuple[tuple[str, str], ...] = ()      # VM.platform (acpi, vga, cores-per-socket..)


@dataclass(frozen=True)
class DomainCounters:
    """Cumulative counters since the domain started; the collector turns them into rates."""
    cpu_seconds: tuple[float, ...]                         # per vCPU
    memory: int                                            # bytes in use by the domain
    memory_target: int
    memory_internal_free: int                              # KiB, as the guest reports it
    vif: dict[str, tuple[int, int]] = field(default_factory=dict)   # device -> (rx, tx) bytes
    vbd: dict[str, tuple[int, int]] = field(default_factory=dict)   # device -> (read, written)


@dataclass(frozen=True)
class GuestEvent:
    uuid: str
    kind: str            # "halt" | "reboot" | "crash" | "guest_metrics"


class Domain(abc.ABC):
    uuid: str
    domid: int
    paused: bool

    @property
    @abc.abstractmethod
    def vnc_address(self) -> tuple[str, int] | str | None:
        """(host, port) or a Unix socket path of the console's RFB server; None if none."""

    @property
    def vt100_address(self) -> tuple[str, int] | str | None:
        """Where the `vt100` text console streams; None if the backend has none."""
        return None

    @abc.abstractmethod
    async def pause(self) -> None: ...

    @abc.abstractmethod
    async def unpause(self) -> None: ...

    @abc.abstractmethod
    async def suspend(self, path: str) -> None:
        """Write the whole domain state to `path` and stop; resume() brings it back."""

    @abc.abstractmethod
    async def save(self, path: str) -> None:
        """Write the whole domain state to `path` as suspend() does, and keep running (a
        checkpoint); resume() of that file brings the domain back as it was then."""

    @abc.abstractmethod
    async def shutdown(self, clean: bool) -> None: ...

    @abc.abstractmethod
    async def reboot(self, clean: bool) -> None: ...

    @abc.abstractmethod
    async def plug_disk(self, disk: DiskSpec) -> None: ...

    @abc.abstractmethod
    async def unplug_disk(self, device: str) -> None: ...

    @abc.abstractmethod
    async def plug_nic(self, nic: NicSpec) -> None: ...

    @abc.abstractmethod
    async def unplug_nic(self, device: str) -> None: ...

    @abc.abstractmethod
    async def change_cd(self, device: str, path: str) -> None:
        """Put the disc `path` into the CD drive `device`, or eject it ("")."""

    @abc.abstractmethod
    def counters(self) -> DomainCounters: ...

    @abc.abstractmethod
    def guest_report(self) -> dict | None:
        """What the guest agent says (os_version, PV_drivers_version, memory, nics); None
        until the guest has booted far enough to run its agent."""

    @abc.abstractmethod
    def console_text(self) -> list[str]:
        """What the text console shows (for the host console and tests)."""


class DomainBackend(abc.ABC):
    # False: a domain ends with the agent's process (a kill -9 too), so the agent keeps each
    # running domain's state on disk while it runs, to resume it at the next start.
    # True: domains run on without the agent; at the next start `attach` finds them again.
    domains_outlive_agent = False
    name = "abstract"

    def __init__(self, on_guest_event: Callable[[GuestEvent], None]) -> None:
        self.on_guest_event = on_guest_event

    @abc.abstractmethod
    async def start(self, config: DomainConfig, paused: bool = False) -> Domain: ...

    @abc.abstractmethod
    async def resume(self, config: DomainConfig, state_path: str, paused: bool = False) -> Domain:
        """Bring back a domain from what suspend() wrote; raises if the state is unusable."""

    async def attach(self, config: DomainConfig, paused: bool) -> Domain:
        """A domain that outlived the last agent, found again; raises (with the reason) if it
        is gone. Only for backends whose domains outlive the agent."""
        raise NotImplementedError

    def provision_root(self, path: str, distro: str, name: str) -> None:
        """Blocking (for the disk pool): write the root file system a provisioned VM of this
        backend boots from into the VDI file `path`."""
        raise NotImplementedError

    @abc.abstractmethod
    def get(self, uuid: str) -> Domain | None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """The server is going down: stop every domain, or let go of those that outlive it."""
