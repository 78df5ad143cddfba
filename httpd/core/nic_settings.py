"""The guide's chapter-6 NIC keys in VIF/PIF other_config: checked when set, applied on plug.

Invalid values are refused with INVALID_VALUE naming the key, so a typo never silently
becomes a default; keys this module does not know are left alone, as xapi does.
"""

from __future__ import annotations

from ..model.errors import XenAPIError

__all__ = ["check_nic_settings", "nic_settings", "effective_mtu"]

_BOOLEAN = ("ethtool-rx", "ethtool-tx", "ethtool-sg", "ethtool-tso", "ethtool-ufo",
            "ethtool-gso", "ethtool-autoneg", "promiscuous")
_TRUTH = {"on": "on", "true": "on", "off": "off", "false": "off"}


def _normal(key: str, value: str) -> str | None:
    """The canonical value for a known key, None for keys we do not interpret."""
    v = value.strip().lower()
    if key in _BOOLEAN:
        if v not in _TRUTH:
            raise XenAPIError("INVALID_VALUE", key, value)
        return _TRUTH[v]
    if key == "ethtool-speed":
        if v not in ("10", "100", "1000"):
            raise XenAPIError("INVALID_VALUE", key, value)
        return v
    if key == "ethtool-duplex":
        if v not in ("half", "full"):
            raise XenAPIError("INVALID_VALUE", key, value)
        return v
    if key == "mtu":
        if not v.isdigit() or not 68 <= int(v) <= 65535:
            raise XenAPIError("INVALID_VALUE", key, value)
        return str(int(v))
    return None


def check_nic_settings(other_config: dict[str, str]) -> None:
    for key, value in other_config.items():
        _normal(key, value)


def nic_settings(other_config: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The known keys, canonical values, sorted: what the device gets on plug."""
    out = []
    for key, value in sorted(other_config.items()):
        try:
            v = _normal(key, value)
        except XenAPIError:
            continue   # checked when set; an old bad value is not applied
        if v is not None:
            out.append((key, v))
    return tuple(out)


def effective_mtu(other_config: dict[str, str], default: int) -> int:
    return int(dict(nic_settings(other_config)).get("mtu", default))
