"""Device names and MAC addresses, shared by the VM operations, hot plug and imports."""

from __future__ import annotations

import secrets

__all__ = ["new_mac", "vbd_device"]


def new_mac() -> str:
    """A random locally administered unicast MAC (xapi's convention)."""
    b = bytearray(secrets.token_bytes(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def vbd_device(userdevice: str) -> str:
    """userdevice "0" -> "xvda", "1" -> "xvdb"; anything else is kept as given."""
    if userdevice.isdigit() and int(userdevice) < 26:
        return "xvd" + chr(ord("a") + int(userdevice))
    return userdevice
