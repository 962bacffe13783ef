"""Typed keys for everything the app holds; no module globals."""

from __future__ import annotations

from aiohttp import web

from bot.clock import Clock
from bot.settings import Settings
from db.session import Database

SETTINGS = web.AppKey("settings", Settings)
DATABASE = web.AppKey("database", Database)
CLOCK = web.AppKey("clock", Clock)
