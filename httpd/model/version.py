"""The XenAPI version this agent speaks and its product version (one place for server and xe)."""

from __future__ import annotations

__all__ = ["API_VERSION", "API_VERSION_TEXT", "PRODUCT_VERSION"]

API_VERSION = (2, 21)
API_VERSION_TEXT = f"{API_VERSION[0]}.{API_VERSION[1]}"
PRODUCT_VERSION = "0.1.0"
