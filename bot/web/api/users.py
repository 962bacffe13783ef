"""``GET /api/v1/users``: who can be assigned or paged (admin only)."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from bot.appkeys import DATABASE
from bot.web.api.auth import ADMIN, require
from db.models import User

_USERS = select(User.id, User.email, User.name, User.role, User.active, User.on_call).order_by(
    User.email
)


async def list_users(request: web.Request) -> web.Response:
    await require(request, *ADMIN)
    async with request.app[DATABASE].plain_reads() as conn:
        rows = (await conn.execute(_USERS)).all()
    return web.json_response(
        {
            "items": [
                {
                    "id": r.id,
                    "email": r.email,
                    "name": r.name,
                    "role": str(r.role),
                    "active": r.active,
                    "on_call": r.on_call,
                }
                for r in rows
            ]
        }
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/users", list_users)
