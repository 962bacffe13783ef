"""``aftercare demo``: SQLite, console SMS, demo accounts and patients, web + worker."""

from __future__ import annotations

import os
import secrets
from datetime import UTC, datetime, time

from sqlalchemy import select

from bot.migrations import upgrade_async
from bot.server import serve
from bot.services.accounts import NewUser, create_user
from bot.services.library_seed import seed_library
from bot.settings import Settings, load_settings
from db.enums import PatientStatus, Role
from db.models import Patient, User
from db.session import Database

DEMO_PASSWORD = "aftercare-demo-2026"  # noqa: S105 - printed demo login
DEMO_USERS = (
    NewUser("admin@demo.aftercare", Role.ADMIN, DEMO_PASSWORD, "Ada Admin"),
    NewUser(
        "nurse@demo.aftercare", Role.CLINICIAN, DEMO_PASSWORD, "Nia Nurse", "+12025550101", True
    ),
    NewUser("doctor@demo.aftercare", Role.CLINICIAN, DEMO_PASSWORD, "Dev Doctor", "+12025550102"),
)
DEMO_PATIENTS = (
    ("Maya", "+12025550111", "America/New_York"),
    ("Sam", "+12025550112", "America/Chicago"),
    ("Lena", "+12025550113", "Europe/Berlin"),
)


def demo_settings() -> Settings:
    env = dict(os.environ)
    env.setdefault("CLINIC_NAME", "Aftercare Demo Clinic")
    env.setdefault("CLINIC_PHONE", "+12025550100")
    env["SMS_TRANSPORT"] = "console"
    env.setdefault("TWILIO_AUTH_TOKEN", secrets.token_hex(16))
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(48))
    return load_settings(env, demo=True)


async def seed_demo(db: Database, now: datetime) -> None:
    """Idempotent: running the demo twice keeps one copy of everything."""
    async with db.write() as session:
        await seed_library(session=session, now=now)
        existing = set((await session.scalars(select(User.email))).all())
        for new in DEMO_USERS:
            if new.email not in existing:
                await create_user(session=session, new=new, now=now)
        phones = set((await session.scalars(select(Patient.phone))).all())
        for first_name, phone, tz in DEMO_PATIENTS:
            if phone not in phones:
                session.add(
                    Patient(
                        first_name=first_name,
                        phone=phone,
                        timezone=tz,
                        language="en",
                        quiet_start=time(21, 0),
                        quiet_end=time(8, 0),
                        status=PatientStatus.ACTIVE,
                        created_at=now,
                        updated_at=now,
                    )
                )


async def run_demo(*, host: str, port: int) -> None:
    settings = demo_settings().with_overrides(host=host, port=port)
    await upgrade_async(settings.database_url)
    db = Database(settings.database_url)
    try:
        await seed_demo(db, datetime.now(UTC))
    finally:
        await db.dispose()

    async def announce() -> None:
        base = f"http://{host}:{port}"
        print(
            "\n".join(
                [
                    "",
                    "aftercare demo is running (SQLite, console SMS transport; Ctrl-C stops it)",
                    f"  health:     {base}/healthz",
                    f"  database:   {settings.database_url}",
                    "  logins (password for all: " + DEMO_PASSWORD + "):",
                    *(f"    {u.role:<9} {u.email}" for u in DEMO_USERS),
                    "",
                ]
            ),
            flush=True,
        )

    await serve(settings, with_worker=True, on_started=announce)
