"""Bearer-token authentication and role checks for the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.appkeys import CLOCK, DATABASE
from bot.services.accounts import hash_token
from bot.web.api.errors import ApiError
from db.enums import Role
from db.models import ApiToken, User

LAST_USED_GRANULARITY = timedelta(minutes=5)

# One Core statement of plain columns, built once: every API request runs it (no caching
# of validity across requests, so revocation and deactivation take effect at once).
_TOKEN = (
    select(ApiToken.id, ApiToken.last_used_at, User.id, User.email, User.role)
    .join(User, User.id == ApiToken.user_id)
    .where(
        ApiToken.token_hash == bindparam("token_hash"),
        ApiToken.revoked_at.is_(None),
        ApiToken.expires_at > bindparam("now"),
        User.active.is_(True),
    )
)


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: int
    email: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


async def authenticate(request: web.Request, conn: AsyncConnection | None = None) -> Principal:
    """The token's user. ``conn`` lets a handler run this lookup and its own reads on one
    autocommit connection (see ``Database.plain_reads``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    now = request.app[CLOCK].now()
    params = {"token_hash": hash_token(token.strip()), "now": now}
    db = request.app[DATABASE]
    if conn is None:
        async with db.plain_reads() as own:
            row = (await own.execute(_TOKEN, params)).first()
    else:
        row = (await conn.execute(_TOKEN, params)).first()
    if row is None:
        raise ApiError(
            401, "unauthorized", "the token is unknown, revoked or expired, or its user is inactive"
        )
    token_id, last_used, user_id, email, role = row
    if last_used is None or now - last_used > LAST_USED_GRANULARITY:
        async with db.write() as session:
            await session.execute(
                update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
            )
    return Principal(user_id=user_id, email=email, role=role)


async def require(
    request: web.Request, *roles: Role, conn: AsyncConnection | None = None
) -> Principal:
    """The caller, if their role is one of ``roles`` (any role when none given)."""
    principal = await authenticate(request, conn)
    if roles and principal.role not in roles:
        raise ApiError(
            403, "forbidden", f"this needs the {' or '.join(str(r) for r in roles)} role"
        )
    return principal


STAFF = (Role.CLINICIAN, Role.ADMIN)
ADMIN = (Role.ADMIN,)
