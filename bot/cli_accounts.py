"""``aftercare user ...`` and ``aftercare token ...``: account lifecycle from the shell."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncSession

from bot.security.passwords import PasswordRejected
from bot.services import accounts
from bot.services.accounts import AccountError, Change
from bot.settings import Settings
from db.enums import Role
from db.session import Database

Action = Callable[[AsyncSession, datetime], Awaitable[None]]


def _run(settings: Settings, action: Action) -> int:
    """Run one change in one transaction; an account error is one line and exit 1."""

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                await action(session, datetime.now(UTC))
        except (AccountError, PasswordRejected) as exc:
            print(f"aftercare: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        return 0

    return asyncio.run(run())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def user_command(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout

    async def act(session: AsyncSession, now: datetime) -> None:
        if args.user_command == "list":
            rows = await accounts.list_users(session=session, now=now)
            out.write(
                f"{'email':<32} {'role':<9} {'active':<6} {'locked':<6} {'on-call':<7} last sign-in\n"
            )
            for a in rows:
                u = a.user
                out.write(
                    f"{u.email:<32} {u.role!s:<9} {'yes' if u.active else 'no':<6} "
                    f"{'yes' if a.locked else 'no':<6} {'yes' if u.on_call else 'no':<7} "
                    f"{_when(u.last_login_at)}\n"
                )
            return
        user = await accounts.find_user(session, args.email)
        change = Change(now=now, source="cli")
        if args.user_command == "deactivate":
            await accounts.deactivate(session=session, user=user, change=change)
            out.write(f"deactivated {user.email}; their sessions and tokens are ended\n")
        elif args.user_command == "unlock":
            await accounts.unlock(session=session, user=user, change=change)
            out.write(f"unlocked {user.email}\n")
        elif args.user_command == "set-role":
            await accounts.set_role(session=session, user=user, role=Role(args.role), change=change)
            out.write(f"{user.email} is now {args.role}\n")
        elif args.user_command == "reset-password":
            password = sys.stdin.readline().rstrip("\r\n")
            await accounts.reset_password(
                session=session,
                user=user,
                password=password,
                change=change,
                clinic_name=settings.clinic_name,
            )
            out.write(f"new password set for {user.email}; their sessions and tokens are ended\n")

    if args.user_command == "reset-password" and not args.password_stdin:
        print(
            "aftercare: pass --password-stdin and the password on standard input", file=sys.stderr
        )
        return 2
    return _run(settings, act)


def token_command(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout

    async def act(session: AsyncSession, now: datetime) -> None:
        if args.action == "list":
            rows = await accounts.list_tokens(session=session, email=args.email)
            out.write(
                f"{'id':>5} {'owner':<32} {'label':<20} {'created':<16} {'last used':<16} "
                f"{'expires':<16} state\n"
            )
            for t in rows:
                out.write(
                    f"{t.id:>5} {t.email:<32} {t.label[:20]:<20} {_when(t.created_at):<16} "
                    f"{_when(t.last_used_at):<16} {_when(t.expires_at):<16} {t.state(now)}\n"
                )
            return
        await accounts.revoke_token(
            session=session, token_id=args.id, change=Change(now=now, source="cli")
        )
        out.write(f"token {args.id} revoked\n")

    return _run(settings, act)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("user", help="list users; deactivate, unlock, set-role, reset-password")
    users = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    users.add_parser("list", help="users with role, active, locked and on-call")
    for name, helptext in (
        ("deactivate", "end the user's access: sign-in, sessions and tokens"),
        ("unlock", "forgive failed sign-ins so the user can sign in again at once"),
    ):
        users.add_parser(name, help=helptext).add_argument("--email", required=True)
    q = users.add_parser("set-role", help="make the user an admin or a clinician")
    q.add_argument("--email", required=True)
    q.add_argument("--role", required=True, choices=[str(r) for r in Role])
    q = users.add_parser("reset-password", help="set a new password (stdin); ends sessions")
    q.add_argument("--email", required=True)
    q.add_argument("--password-stdin", action="store_true")

    p = sub.add_parser("token", help="list or revoke API tokens (never shows their secret)")
    tokens = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    tokens.add_parser("list", help="tokens with owner, label, dates and state").add_argument(
        "--email", help="only this user's tokens"
    )
    tokens.add_parser("revoke", help="revoke a token by its id").add_argument(
        "--id", type=int, required=True
    )
