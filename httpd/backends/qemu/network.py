"""Guest networking of the QEMU backend: a Linux bridge per XenAPI network, a tap device per
plugged VIF on its network's bridge, and DHCP on each bridge from a dnsmasq the agent runs.

The bridges are the networks' own (`network.bridge`: `xenbr0`, `xenapi`, ...) and are never
connected to a physical NIC: each is a private segment with a subnet of its own
(10.213.<n>.0/24, the host at .1, dnsmasq handing out .10-.250), so guests on one network reach
each other and the host, nothing else. Like QEMU, dnsmasq daemonizes and outlives the agent;
its pid file is checked at the next start. Taps are named like xapi's: `vif<domid>.<device>`.

Everything here runs `ip` and `dnsmasq` (blocking: call it from a worker thread), and needs
CAP_NET_ADMIN; `available()` says whether this process may.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import zlib
from pathlib import Path

__all__ = ["Networks", "NetworkError", "available", "counters"]


class NetworkError(Exception):
    """A bridge, tap or DHCP server could not be made (the reason says why)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetworkError("ip is not installed (Debian's iproute2)") from None
    if check and done.returncode:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def available() -> bool:
    """Whether bridges and taps can be made here (root, iproute2, /dev/net/tun)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None and \
        os.path.exists("/dev/net/tun")


def _exists(dev: str) -> bool:
    """In this process's network namespace (not /sys, which shows the namespace that
    mounted it)."""
    return _ip("link", "show", "dev", dev, check=False).returncode == 0


def counters(dev: str) -> tuple[int, int]:
    """(received, sent) bytes of a device of this network namespace (/proc/net/dev)."""
    try:
        with open("/proc/net/dev") as fh:
            for line in fh:
                name, sep, rest = line.partition(":")
                if sep and name.strip() == dev:
                    fields = rest.split()
                    return int(fields[0]), int(fields[8])
    except (OSError, ValueError, IndexError):
        pass
    return 0, 0


class Networks:
    def __init__(self, state_dir: Path, dnsmasq: str = "dnsmasq") -> None:
        self.state_dir = state_dir
        self.dnsmasq = dnsmasq
        self._subnets: dict[str, int] = {}

    def subnet(self, bridge: str) -> int:
        """The third octet of the bridge's 10.213.<n>.0/24, stable for its name."""
        n = self._subnets.get(bridge)
        if n is None:
            taken = set(self._subnets.values())
            n = zlib.crc32(bridge.encode()) % 250 + 1
            while n in taken:
                n = n % 250 + 1
            self._subnets[bridge] = n
        return n

    def ensure_bridge(self, bridge: str, mtu: int = 1500) -> None:
        """The bridge, up, with the host's address on its subnet and a DHCP server."""
        if not _exists(bridge):
            _ip("link", "add", bridge, "type", "bridge")
        _ip("link", "set", bridge, "mtu", str(mtu), "up")
        host = f"10.213.{self.subnet(bridge)}.1/24"
        if host not in _ip("-o", "-4", "addr", "show", "dev", bridge).stdout:
            _ip("addr", "add", host, "dev", bridge)
        self._ensure_dhcp(bridge)

    def _pidfile(self, bridge: str) -> Path:
        return self.state_dir / f"dnsmasq-{bridge}.pid"

    def _dhcp_running(self, bridge: str) -> bool:
        with contextlib.suppress(OSError, ValueError):
            pid = int(self._pidfile(bridge).read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            return str(self._pidfile(bridge)).encode() in cmdline
        return False

    def _ensure_dhcp(self, bridge: str) -> None:
        if self._dhcp_running(bridge):
            return
        n = self.subnet(bridge)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [self.dnsmasq, "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
               f"--interface={bridge}", "--except-interface=lo",
               f"--dhcp-range=10.213.{n}.10,10.213.{n}.250,255.255.255.0,12h",
               f"--dhcp-leasefile={self.state_dir / f'dnsmasq-{bridge}.leases'}",
               f"--pid-file={self._pidfile(bridge)}", "--dhcp-authoritative"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise NetworkError(f"{self.dnsmasq} is not installed (Debian's dnsmasq-base)") \
                from None
        if done.returncode:
            raise NetworkError(f"dnsmasq on {bridge}: {done.stderr.strip()}")

    def add_tap(self, name: str, bridge: str, mtu: int) -> None:
        self.ensure_bridge(bridge)
        if _exists(name):
            _ip("link", "del", name, check=False)
        _ip("tuntap", "add", "dev", name, "mode", "tap")
        try:
            _ip("link", "set", name, "master", bridge, "mtu", str(mtu), "up")
        except NetworkError:
            _ip("link", "del", name, check=False)
            raise

    def remove_tap(self, name: str) -> None:
        if name and _exists(name):
            _ip("link", "del", name, check=False)
