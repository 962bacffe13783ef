"""The JSON API under ``/api/v1``."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from bot.web.api import escalations, exports, flows, openapi, patients, users
from bot.web.api.errors import api_errors


def middlewares() -> list[Middleware]:
    return [api_errors]


def setup(app: web.Application) -> None:
    patients.setup(app)
    escalations.setup(app)
    flows.setup(app)
    exports.setup(app)
    users.setup(app)
    openapi.setup(app)
