"""What a fresh data directory starts with, and what every start refreshes.

First start: the pool, this host and its metrics, the control domain (Running, with `rfb` and
`vt100` consoles), a local file SR "Local storage" with an attached PBD, a network + PIF per real
network interface, the guide's templates, and a demo VM. Every start: the host's hostname,
address and software version, and console locations (listeners may have changed).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import time
from pathlib import Path

from ..config import Config, parse_hostport
from ..model.identity import ThisHost
from ..model.store import Store
from ..model.version import API_VERSION, PLATFORM_VERSION, PRODUCT_VERSION, XAPI_PRODUCT_VERSION
from ..model.xtypes import NULL_REF
from .operations import refresh_allowed

__all__ = ["ensure_host"]

GiB = 2**30

# name, description, other_config extras, disks (size, bootable), HVM
_TEMPLATES = [
    ("Debian Etch 4.0", "Debian Etch 4.0 template, populated with a root filesystem on provision",
     {"debian-release": "etch"}, [(4 * GiB, True)], False),
    ("Debian Lenny 5.0 (32-bit)", "Debian Lenny 5.0 template",
     {"debian-release": "lenny"}, [(8 * GiB, True)], False),
    ("CentOS 5 (64-bit)", "CentOS 5 paravirtual installer: set other-config:install-repository",
     {"install-methods": "cdrom,nfs,http,ftp", "install-distro": "rhlike"}, [(8 * GiB, True)],
     False),
    ("Linux (busybox)", "A small Linux: busybox on Debian's cloud kernel, written onto its disk "
     "on provision (QEMU backend: a real guest)", {"rootfs": "busybox"}, [(256 * 2**20, True)],
     False),
    ("Other install media", "Boot from install media (HVM)",
     {"install-methods": "cdrom"}, [(8 * GiB, True)], True),
]


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def host_address(configured: str | None, listen: tuple[str, ...] = ()) -> str:
    """`host.address`: --public-address, else the one address the agent listens on (clients
    such as Xen Orchestra reach the host there), else the host name's address."""
    if configured:
        return configured
    for spec in listen:
        host, _ = parse_hostport(spec, 80)
        if host not in ("", "0.0.0.0", "::"):
            return host
    try:
        addr = socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"
    return addr


def _interfaces() -> list[tuple[str, str, int]]:
    """(device, MAC, MTU) of each real network interface, loopback excluded."""
    out = []
    base = Path("/sys/class/net")
    for dev in sorted(os.listdir(base)) if base.exists() else []:
        if dev == "lo":
            continue
        try:
            mac = (base / dev / "address").read_text().strip()
            mtu = int((base / dev / "mtu").read_text().strip())
        except (OSError, ValueError):
            continue
        out.append((dev, mac, mtu))
    return out


def provision_xml(disks: list[tuple[int, bool]]) -> str:
    items = "".join(
        f'<disk device="{i}" size="{size}" sr="" bootable="{"true" if boot else "false"}" '
        f'type="system"/>' for i, (size, boot) in enumerate(disks))
    return f"<provision>{items}</provision>"


def _software_version(hostname: str) -> dict[str, str]:
    return {"product_version": XAPI_PRODUCT_VERSION, "product_version_text": XAPI_PRODUCT_VERSION,
            "product_version_text_short": XAPI_PRODUCT_VERSION.rsplit(".", 1)[0],
            "product_brand": "XCP-ng", "platform_name": "XCP", "platform_version": PLATFORM_VERSION,
            "xcp-httpd": PRODUCT_VERSION,
            "xapi": f"{API_VERSION[0]}.{API_VERSION[1]}", "xen": "simulated",
            "hostname": hostname, "date": "2026-11-26", "build_number": "xcp-httpd",
            "linux": platform.release()}


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return time.time() - time.monotonic()


def _start_times() -> dict[str, str]:
    """When the machine booted and the agent started, as xapi keeps them in the host's
    other_config (Xen Orchestra and the web page show the host's uptime from `boot_time`)."""
    return {"boot_time": f"{_boot_time():.0f}.", "agent_start_time": f"{time.time():.0f}."}


def _my_host(store: Store, config: Config, database: str, first: bool) -> str:
    """This data directory's host record: `host.uuid` says which (a first start writes it; a
    SQLite data directory from before the file adopts its one host). A database that holds
    other hosts but not this one is refused: a host enters a pool by pool.join."""
    path = config.host_uuid_path
    hosts = store.all("host")
    if path.exists() and not first:     # (an empty database: a first start, whatever the file)
        uuid = path.read_text().strip()
        for ref, rec in hosts.items():
            if rec["uuid"] == uuid:
                return ref
        raise RuntimeError(f"the database holds no host {uuid} (this data directory's "
                           "host): it is another agent's or another pool's database")
    if not first and (database != "sqlite" or len(hosts) != 1):
        names = ", ".join(sorted(r["name_label"] for r in hosts.values()))
        raise RuntimeError(f"the database is a pool's (hosts {names}): a new host starts on "
                           "its own database and joins the pool with pool.join")
    return next(iter(hosts))


def ensure_host(store: Store, config: Config, database: str = "sqlite") -> ThisHost:
    """Create the first-start objects if missing; refresh what may have changed since."""
    hostname = socket.gethostname()
    address = host_address(config.public_address, (*config.listen, *config.https_listen))
    first = not store.all("host")
    with store.transaction():
        if first:
            _first_start(store, config, hostname, address)
        host_ref = _my_host(store, config, database, first)
        store.update("host", host_ref, {
            "hostname": hostname, "address": address,
            "software_version": _software_version(hostname),
            "API_version_major": API_VERSION[0], "API_version_minor": API_VERSION[1],
            "other_config": {**store.get("host", host_ref)["other_config"], **_start_times()}})
        dom0 = store.get("host", host_ref)["control_domain"]
        metrics = store.get("host", host_ref)["metrics"]
        if store.find("host_metrics", metrics) is not None:
            store.update("host_metrics", metrics, {"live": True, "last_updated": _now()})
        _refresh_pif_metrics(store, host_ref)
    uuid = store.get("host", host_ref)["uuid"] + "\n"
    if not config.host_uuid_path.exists() or config.host_uuid_path.read_text() != uuid:
        config.host_uuid_path.write_text(uuid)
    return ThisHost(host_ref, next(iter(store.all("pool"))), dom0)


def _sys_net(dev: str, name: str) -> str:
    try:
        return (Path("/sys/class/net") / dev / name).read_text().strip()
    except OSError:            # no such file, or "Invalid argument" for a link that is down
        return ""


def _refresh_pif_metrics(store: Store, host: str) -> None:
    """Each PIF's carrier, speed and duplex as the kernel reports them now."""
    for ref, pif in list(store.all("PIF").items()):
        if pif["host"] != host:
            continue
        dev = pif["device"]
        speed = _sys_net(dev, "speed")
        pci = Path("/sys/class/net") / dev / "device"
        fields = {"carrier": _sys_net(dev, "carrier") == "1",
                  "speed": int(speed) if speed.lstrip("-").isdigit() and int(speed) > 0 else 0,
                  "duplex": _sys_net(dev, "duplex") == "full",
                  "vendor_id": _sys_net(dev, "device/vendor").removeprefix("0x"),
                  "device_id": _sys_net(dev, "device/device").removeprefix("0x"),
                  "pci_bus_path": pci.resolve().name if pci.exists() else "",
                  "last_updated": _now()}
        metrics = pif["metrics"]
        if metrics == NULL_REF or store.find("PIF_metrics", metrics) is None:
            store.update("PIF", ref, {"metrics": store.create("PIF_metrics", fields)})
        else:
            store.update("PIF_metrics", metrics, fields)


def _first_start(store: Store, config: Config, hostname: str, address: str) -> None:
    metrics = store.create("host_metrics", {"live": True, "last_updated": _now()})
    host = store.create("host", {
        "name_label": hostname, "name_description": "Default install", "hostname": hostname,
        "address": address, "enabled": True, "metrics": metrics,
        "API_version_vendor": "XCP", "capabilities": ["xen-3.0-x86_64", "hvm-3.0-x86_64"],
        "cpu_info": {"cpu_count": str(os.cpu_count() or 1), "vendor": platform.machine()},
        "sched_policy": "credit", "supported_bootloaders": ["pygrub", "eliloader"]})
    dom0_metrics = store.create("VM_metrics", {"VCPUs_number": os.cpu_count() or 1,
                                               "start_time": _now(), "last_updated": _now()})
    dom0 = store.create("VM", {
        "name_label": f"Control domain on host: {hostname}",
        "name_description": "The domain which manages physical devices and manages other domains",
        "power_state": "Running", "is_control_domain": True, "resident_on": host, "domid": 0,
        "metrics": dom0_metrics, "VCPUs_max": os.cpu_count() or 1,
        "VCPUs_at_startup": os.cpu_count() or 1, "allowed_operations": []})
    store.update("host", host, {"control_domain": dom0})
    for protocol in ("rfb", "vt100"):
        store.create("console", {"protocol": protocol, "VM": dom0})   # located once listening

    sr_uuid_dir = config.sr_dir
    sr = store.create("SR", {
        "name_label": "Local storage", "name_description": f"Sparse files on {hostname}",
        "type": "file", "content_type": "user", "shared": False,
        "other_config": {"i18n-key": "local-storage",
                         "i18n-original-value-name_label": "Local storage"}})
    refresh_allowed(store, "SR", sr)
    sr_path = sr_uuid_dir / store.get("SR", sr)["uuid"]
    sr_path.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(sr_path)
    store.update("SR", sr, {"physical_size": st.f_blocks * st.f_frsize})
    store.create("PBD", {"host": host, "SR": sr, "device_config": {"path": str(sr_path)},
                         "currently_attached": True})
    store.create("pool", {"name_label": "", "master": host, "default_SR": sr,
                          "suspend_image_SR": sr, "crash_dump_SR": sr})
    store.update("host", host, {"suspend_image_sr": sr, "crash_dump_sr": sr})

    for i, (dev, mac, mtu) in enumerate(_interfaces()):
        net = store.create("network", {
            "name_label": f"Pool-wide network associated with {dev}", "bridge": f"xenbr{i}",
            "MTU": mtu})
        store.create("PIF", {"device": dev, "network": net, "host": host, "MAC": mac, "MTU": mtu,
                             "management": i == 0, "physical": True, "currently_attached": True})
    if not store.all("network"):
        store.create("network", {"name_label": "Host internal management network",
                                 "bridge": "xenapi", "MTU": 1500})

    for label, desc, extra, disks, hvm in _TEMPLATES:
        template = store.create("VM", {
            "name_label": label, "name_description": desc, "is_a_template": True,
            "is_default_template": True, "power_state": "Halted",
            "other_config": {"disks": provision_xml(disks), "default_template": "true", **extra},
            "PV_bootloader": "" if hvm else ("eliloader" if "install-distro" in extra
                                             else "pygrub"),
            "HVM_boot_policy": "BIOS order" if hvm else "",
            "HVM_boot_params": {"order": "dc"} if hvm else {},
            "domain_type": "hvm" if hvm else "pv", "affinity": NULL_REF})
        refresh_allowed(store, "VM", template)
