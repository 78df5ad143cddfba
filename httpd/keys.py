"""Typed application keys (aiohttp AppKey), in one place to avoid import cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["AGENT"]

AGENT: "web.AppKey[Agent]" = web.AppKey("agent")
