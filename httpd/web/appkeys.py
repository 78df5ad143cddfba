"""Typed application keys (aiohttp AppKey) of the web layer."""

from __future__ import annotations

from aiohttp import web

from ..core.context import Services

__all__ = ["SERVICES"]

SERVICES: "web.AppKey[Services]" = web.AppKey("services", Services)
