"""``POST /session/keepalive``: the idle warning's "Stay signed in" (see ``app.js``).

An ordinary signed-in, CSRF-checked page request: ``page_session`` touches the session as
for any page, so the idle timeout starts again; the timeout itself is unchanged. It also
gives every page the numbers its idle warning needs (``base.html`` puts them on ``<body>``).
"""

from __future__ import annotations

import aiohttp_jinja2
from aiohttp import web

from bot.services import sessions
from bot.web.pages.common import form_with_csrf, require_user

PATH = "/session/keepalive"
IDLE_SECONDS = int(sessions.IDLE_TIMEOUT.total_seconds())
# a request extends the idle expiry only if the last extension is this old, so a page's
# session may end up to this much before its load time + IDLE_SECONDS
TOUCH_SECONDS = int(sessions.TOUCH_EVERY.total_seconds())


async def keepalive(request: web.Request) -> web.Response:
    user = require_user(request)
    await form_with_csrf(request, user)
    return web.json_response({"idle_seconds": IDLE_SECONDS})


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.get_env(app)
    env.globals["idle_timeout_seconds"] = IDLE_SECONDS
    env.globals["idle_touch_seconds"] = TOUCH_SECONDS
    app.router.add_post(PATH, keepalive)
