"""Daemon configuration: parsed once from the command line, frozen before start-up."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Config", "parse_hostport"]


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    listen: tuple[str, ...] = ("127.0.0.1:8080",)
    https_listen: tuple[str, ...] = ()
    unix_socket: tuple[str, ...] = ()
    public_address: str | None = None     # what console locations name; default: host address
    root_password: str | None = field(default_factory=lambda: os.environ.get("XCP_ROOT_PASSWORD"))
    session_limit: int = 200
    session_idle_timeout: float = 24 * 3600.0
    login_fail_delay: float = 0.5
    event_queue_size: int = 10_000
    max_rpc_body: int = 16 * 2**20
    db_synchronous: str = "FULL"
    database: str = "sqlite"              # or a postgresql:// URL (model/engines.py)
    janitor_interval: float = 60.0
    demo: bool = True                      # first start also makes a halted "demo" VM
    stats_interval: int = 5                # seconds between statistics collections
    stats_save_interval: float = 3600.0    # seconds between saves of every RRD file
    console_vm_limit: int = 0              # open console tunnels per VM (0: no limit; over: 503)
    console_idle_timeout: float = 0.0      # seconds without key/pointer input before a console closes (0: none)
    console_rfb_version: str = "3.8"       # the host console's RFB server: "3.3", "3.7" or "3.8"
    host_power_command: str | None = None  # host.reboot / host.shutdown run `CMD reboot|poweroff`
    max_connections: int = 0               # 0: what the descriptor limit allows (a third of it)
    backend: str = "simulated"             # "qemu": real VMs; "auto": qemu when installed
    accel: str = "auto"                    # QEMU's accelerator: "auto" probes KVM, else TCG
    guest_network: str = "auto"            # "bridge": bridges, taps, DHCP; "user": QEMU's own
    clean_shutdown_timeout: float = 120.0  # seconds a guest has to power off when asked

    def connection_limit(self) -> int:
        """Connections the listeners hold at most: a console tunnel takes three descriptors,
        and some are kept for files and the database."""
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(64, (soft - 256) // 3) if soft != resource.RLIM_INFINITY else 1 << 20

    @property
    def rfb_version(self) -> tuple[int, int]:
        major, _, minor = self.console_rfb_version.partition(".")
        return int(major), int(minor)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "xapi.db"

    @property
    def password_path(self) -> Path:
        return self.data_dir / "root.passwd"

    @property
    def host_uuid_path(self) -> Path:
        """Which host of the database this data directory is (its uuid)."""
        return self.data_dir / "host.uuid"

    @property
    def sr_dir(self) -> Path:
        return self.data_dir / "sr"

    @property
    def tls_cert(self) -> Path:
        return self.data_dir / "server.pem"

    @property
    def tls_key(self) -> Path:
        return self.data_dir / "server.key"
