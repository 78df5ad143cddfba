"""The XenAPI version this agent speaks and its product version (one place for server and xe)."""

from __future__ import annotations

__all__ = ["API_VERSION", "API_VERSION_TEXT", "PRODUCT_VERSION", "XAPI_PRODUCT_VERSION",
           "PLATFORM_VERSION"]

API_VERSION = (2, 21)
API_VERSION_TEXT = f"{API_VERSION[0]}.{API_VERSION[1]}"
PRODUCT_VERSION = "0.1.0"
# What host.software_version says, as the XCP-ng release whose API this agent speaks: clients
# (Ansible's XenServer modules, Xen Orchestra) branch on these numbers, not on our own version.
XAPI_PRODUCT_VERSION = "8.3.0"
PLATFORM_VERSION = "3.4.0"
