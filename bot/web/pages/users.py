"""Admin pages: users, their API tokens and the on-call rota.

Every change goes through ``bot.services.accounts``, the functions the command
line uses, so both are audited and checked alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.security.passwords import PasswordRejected
from bot.services import accounts
from bot.services.accounts import AccountError, Change, NewUser, NoSuchAccount
from bot.web.audit_log import source
from bot.web.pages import notices
from bot.web.pages.common import form_with_csrf, path_int, render, require_user
from db.enums import Role
from db.models import User

Act = Callable[[AsyncSession, User, Change, dict[str, str]], Awaitable[str]]


async def users_page(request: web.Request, *, error: str = "", status: int = 200) -> web.Response:
    require_user(request, admin=True)
    now = request.app[CLOCK].now()
    async with request.app[DATABASE].read() as session:
        rows = await accounts.list_users(session=session, now=now)
        tokens = await accounts.list_tokens(session=session)
    return render(
        request,
        "users.html",
        {
            "rows": rows,
            "tokens": tokens,
            "roles": [str(r) for r in Role],
            **({"error": error} if error else {}),
            "now": now,
        },
        status=status,
    )


def _change(request: web.Request, actor_id: int) -> Change:
    return Change(
        now=request.app[CLOCK].now(), actor_id=actor_id, source="web", address=source(request)
    )


async def _deactivate(s: AsyncSession, u: User, c: Change, _f: dict[str, str]) -> str:
    await accounts.deactivate(session=s, user=u, change=c)
    return "deactivated"


async def _reactivate(s: AsyncSession, u: User, c: Change, _f: dict[str, str]) -> str:
    await accounts.reactivate(session=s, user=u, change=c)
    return "reactivated"


async def _unlock(s: AsyncSession, u: User, c: Change, _f: dict[str, str]) -> str:
    await accounts.unlock(session=s, user=u, change=c)
    return "unlocked"


async def _role(s: AsyncSession, u: User, c: Change, f: dict[str, str]) -> str:
    if f.get("role") not in {str(r) for r in Role}:
        raise AccountError("choose a role: admin or clinician")
    await accounts.set_role(session=s, user=u, role=Role(f["role"]), change=c)
    return "role"


async def _on_call(s: AsyncSession, u: User, c: Change, f: dict[str, str]) -> str:
    await accounts.set_on_call(
        session=s, user=u, on_call=f.get("on_call") == "on", phone=f.get("phone"), change=c
    )
    return "on_call"


ACTIONS: dict[str, Act] = {
    "deactivate": _deactivate,
    "reactivate": _reactivate,
    "unlock": _unlock,
    "role": _role,
    "on-call": _on_call,
}


def _user_action(action: Act) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        return await user_action(request, action)

    return handle


async def user_action(request: web.Request, action: Act) -> web.Response:
    admin = require_user(request, admin=True)
    fields = await form_with_csrf(request, admin)
    user_id = path_int(request)
    try:
        async with request.app[DATABASE].write() as session:
            user = await accounts.get_user(session, user_id)
            notice = await action(session, user, _change(request, admin.user_id), fields)
    except NoSuchAccount:
        raise web.HTTPNotFound(text="No such user or token.") from None
    except AccountError as exc:
        return await users_page(request, error=str(exc), status=422)
    raise notices.to("/admin/users", notice=notice)


async def reset_password(request: web.Request) -> web.Response:
    admin = require_user(request, admin=True)
    fields = await form_with_csrf(request, admin)
    user_id = path_int(request)
    password = fields.get("password", "")
    try:
        async with request.app[DATABASE].write() as session:
            await accounts.reset_password(
                session=session,
                user=await accounts.get_user(session, user_id),
                password=password,
                change=_change(request, admin.user_id),
                clinic_name=request.app[SETTINGS].clinic_name,
            )
    except NoSuchAccount:
        raise web.HTTPNotFound(text="No such user.") from None
    except (AccountError, PasswordRejected) as exc:
        return await users_page(request, error=str(exc), status=422)
    raise notices.to("/admin/users", notice="password")


async def create_user(request: web.Request) -> web.Response:
    admin = require_user(request, admin=True)
    fields = await form_with_csrf(request, admin)
    role = fields.get("role", "")
    if role not in {str(r) for r in Role}:
        return await users_page(request, error="Choose a role: admin or clinician.", status=422)
    new = NewUser(
        email=fields.get("email", ""),
        role=Role(role),
        password=fields.get("password", ""),
        name=fields.get("name", "")[:120],
        phone=fields.get("phone", "").strip() or None,
    )
    try:
        async with request.app[DATABASE].write() as session:
            await accounts.create_user(
                session=session,
                new=new,
                now=request.app[CLOCK].now(),
                clinic_name=request.app[SETTINGS].clinic_name,
                actor_id=admin.user_id,
                source="web",
            )
    except (AccountError, PasswordRejected) as exc:
        return await users_page(request, error=str(exc), status=422)
    raise notices.to("/admin/users", notice="created")


async def revoke_token(request: web.Request) -> web.Response:
    admin = require_user(request, admin=True)
    await form_with_csrf(request, admin)
    try:
        async with request.app[DATABASE].write() as session:
            await accounts.revoke_token(
                session=session, token_id=path_int(request), change=_change(request, admin.user_id)
            )
    except NoSuchAccount:
        raise web.HTTPNotFound(text="No such user or token.") from None
    except AccountError as exc:
        return await users_page(request, error=str(exc), status=422)
    raise notices.to("/admin/users", notice="revoked")


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/users", users_page)
    app.router.add_post("/admin/users", create_user)
    app.router.add_post("/admin/users/{id}/password", reset_password)
    for name, action in ACTIONS.items():
        app.router.add_post(f"/admin/users/{{id}}/{name}", _user_action(action))
    app.router.add_post("/admin/tokens/{id}/revoke", revoke_token)
