"""The ``aftercare`` command line (the README's "Command line")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.settings import Settings, SettingsError, load_settings


def _settings(*, require_secret: bool = True, demo: bool = False) -> Settings:
    try:
        return load_settings(require_secret=require_secret, demo=demo)
    except SettingsError as exc:
        print(f"aftercare: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _now() -> datetime:
    return datetime.now(UTC)


def _until_stopped(main: Coroutine[Any, Any, None]) -> int:
    """Run a server; a reason it cannot start is one line and exit 2, never a traceback."""
    from bot.startup import StartupError

    try:
        asyncio.run(main)
    except StartupError as exc:
        print(f"aftercare: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from bot.migrations import upgrade
    from bot.services.library_seed import seed_library
    from db.session import Database

    settings = _settings(require_secret=False)
    upgrade(settings.database_url)

    async def seed() -> None:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                result = await seed_library(session=session, now=_now())
        finally:
            await db.dispose()
        added = [*result.flows_added, *result.protocols_added]
        print(
            f"database at head; library: {len(added)} added"
            + (f" ({', '.join(added)})" if added else "")
        )

    asyncio.run(seed())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.server import serve

    settings = _settings()
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    return _until_stopped(serve(settings.with_overrides(**overrides), with_worker=args.with_worker))


def cmd_worker(_args: argparse.Namespace) -> int:
    from bot.server import run_worker

    return _until_stopped(run_worker(_settings(require_secret=False)))


def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import NotADemoDatabase, run_demo
    from bot.startup import StartupError

    try:
        asyncio.run(run_demo(host=args.host, port=args.port))
    except (NotADemoDatabase, SettingsError, StartupError) as exc:
        print(f"aftercare demo: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from bot.cli_flows import validate_command

    return validate_command(args.paths, sys.stdout)


def cmd_simulate(args: argparse.Namespace) -> int:
    from bot.cli_flows import simulate_command

    return simulate_command(args.flow, args.script, args.lang, sys.stdout, sys.stdin)


def cmd_import_flows(args: argparse.Namespace) -> int:
    from bot import library
    from bot.services.flow_admin import import_library
    from db.session import Database

    settings = _settings(require_secret=False)

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                results = await import_library(
                    session=session,
                    sources={
                        "flow": library.flow_sources(),
                        "protocol": library.protocol_sources(),
                    },
                    publish_=args.publish,
                    now=_now(),
                )
        finally:
            await db.dispose()
        for r in results:
            print(f"{r.kind:<8} {r.key:<24} {r.outcome}")
        return 0

    return asyncio.run(run())


def cmd_create_user(args: argparse.Namespace) -> int:
    from bot.security.passwords import PasswordRejected
    from bot.services.accounts import AccountError, NewUser, create_user
    from db.enums import Role
    from db.session import Database

    if not args.password_stdin:
        print(
            "aftercare: pass --password-stdin and the password on standard input", file=sys.stderr
        )
        return 2
    password = sys.stdin.readline().rstrip("\r\n")
    settings = _settings(require_secret=False)

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                user = await create_user(
                    session=session,
                    new=NewUser(
                        email=args.email,
                        role=Role(args.role),
                        password=password,
                        name=args.name or "",
                        phone=args.phone,
                        on_call=args.on_call,
                    ),
                    now=_now(),
                    clinic_name=settings.clinic_name,
                )
                print(f"created {user.role} {user.email} (id {user.id})")
        except (AccountError, PasswordRejected) as exc:
            print(f"aftercare: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        return 0

    return asyncio.run(run())


def cmd_create_token(args: argparse.Namespace) -> int:
    from bot.services.accounts import AccountError, create_token
    from db.session import Database

    settings = _settings(require_secret=False)

    async def run() -> int:
        db = Database(settings.database_url)
        try:
            async with db.write() as session:
                _user, token = await create_token(
                    session=session,
                    email=args.email,
                    label=args.label or "",
                    now=_now(),
                    days=args.days,
                )
        except AccountError as exc:
            print(f"aftercare: {exc}", file=sys.stderr)
            return 1
        finally:
            await db.dispose()
        print(token)
        return 0

    return asyncio.run(run())


def cmd_user(args: argparse.Namespace) -> int:
    from bot.cli_accounts import user_command

    return user_command(args, _settings(require_secret=False))


def cmd_token(args: argparse.Namespace) -> int:
    from bot.cli_accounts import token_command

    return token_command(args, _settings(require_secret=False))


def add_account_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bot.cli_accounts import add_parsers

    add_parsers(sub)
    sub.choices["user"].set_defaults(func=cmd_user)
    sub.choices["token"].set_defaults(func=cmd_token)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aftercare",
        description="Text-message follow-up between psychiatric treatments.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="upgrade the database and seed the shipped library")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="run the web app")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--with-worker", action="store_true", help="also run the scheduler")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="run the scheduler/dispatcher only")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser(
        "demo", help="its own SQLite file, console SMS, demo data; serves web + worker"
    )
    p.add_argument("--host", help="default: HOST, else 127.0.0.1")
    p.add_argument("--port", type=int, help="default: PORT, else 8080")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="chat with a flow in the terminal")
    p.add_argument("flow", metavar="FLOW", help="a library flow key or a YAML file")
    p.add_argument("--script", metavar="FILE", help="one reply per line; prints the transcript")
    p.add_argument("--lang", default="en")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("validate", help="validate flow/protocol YAML files")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "import-flows", help="bring shipped library changes in as drafts (never overwrites edits)"
    )
    p.add_argument("--publish", action="store_true", help="also publish what no admin has edited")
    p.set_defaults(func=cmd_import_flows)

    p = sub.add_parser("create-user", help="create a user (password on stdin)")
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=["admin", "clinician"])
    p.add_argument("--name")
    p.add_argument("--phone", help="E.164, for on-call paging")
    p.add_argument("--on-call", action="store_true")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_create_user)

    p = sub.add_parser("create-token", help="print a new API token for a user, once")
    p.add_argument("--email", required=True)
    p.add_argument("--label")
    p.add_argument(
        "--days", type=int, default=90, help="the token expires after this many days (90)"
    )
    p.set_defaults(func=cmd_create_token)

    add_account_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result
