"""The worker's ticks, built from the app's resources."""

from __future__ import annotations

from aiohttp import web

from bot.worker import Tick


def build_ticks(app: web.Application) -> list[Tick]:
    """Every periodic job of the worker; each claims a bounded batch of due rows."""
    ticks: list[Tick] = []
    return ticks
