"""Server-side login sessions and login throttling (HIPAA automatic logoff, ASVS V3).

The cookie carries a random token; the database keeps only its SHA-256, so a
leaked database does not leak live sessions. A new token is issued at every
login; logout and deactivation revoke at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.security.passwords import (
    dummy_hash,
    hash_password_async,
    needs_rehash,
    verify_password_async,
)
from db import audit
from db.enums import Role
from db.models import LoginAttempt, User, WebSession
from db.session import Database

IDLE_TIMEOUT = timedelta(minutes=15)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=30)
# failures for one email from one client address: another address is never locked out
ACCOUNT_FAILURES = 5
# failures from one client address, whatever the email
ADDRESS_FAILURES = 20
THROTTLE_WINDOW = timedelta(minutes=15)

REFUSED = "Email or password is not right."
THROTTLED = (
    "Too many failed sign-ins. Wait 15 minutes and try again, or ask an admin to unlock "
    "your account."
)


def token_hash(token: str, secret: str = "") -> str:
    """The session's key: HMAC-SHA256 of the cookie token under ``SECRET_KEY``, so the
    database alone (a backup, a replica) can neither use nor forge a session."""
    return hmac.new(secret.encode("utf-8"), token.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionUser:
    session_id: str
    user_id: int
    email: str
    name: str
    role: Role
    csrf_token: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def csrf_ok(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(self.csrf_token, candidate or "")


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    token: str | None = None
    user: SessionUser | None = None
    error: str = ""
    throttled: bool = False


def _failures(since: datetime) -> Select[Any]:
    return (
        select(func.count())
        .select_from(LoginAttempt)
        .where(LoginAttempt.success.is_(False), LoginAttempt.at >= since)
    )


async def login(
    *,
    db: Database,
    email: str,
    password: str,
    address: str,
    now: datetime,
    secret: str = "",
    replacing: str | None = None,
) -> LoginOutcome:
    """Check the throttles and the password; record the attempt either way.

    Every refusal costs one argon2 verification, run in a thread and outside any
    transaction, and a throttled or unknown email is answered exactly like a wrong
    password for a real one, so neither timing nor words tell which emails have
    accounts. ``replacing`` is the session a fresh sign-in ends (no fixation)."""
    email = email.strip().lower()[:254]
    since = now - THROTTLE_WINDOW
    # The attempt is recorded as a failure before anything is checked, and the counts
    # include it: guesses sent in parallel each see the ones committed before them, so a
    # burst cannot slip past the throttle while argon2 runs. A success turns it over.
    async with db.write() as session:
        attempt = LoginAttempt(email=email, source_address=address, success=False, at=now)
        session.add(attempt)
        await session.flush()
        attempt_id = attempt.id
    async with db.read() as session:
        user = await session.scalar(select(User).where(User.email == email))
        by_address = await session.scalar(
            _failures(since).where(LoginAttempt.source_address == address)
        )
        by_account_query = _failures(since).where(
            LoginAttempt.source_address == address, LoginAttempt.email == email
        )
        if user is not None and user.unlocked_at is not None:
            by_account_query = by_account_query.where(LoginAttempt.at > user.unlocked_at)
        by_account = await session.scalar(by_account_query)
    # this attempt is among the counted: the limit is reached when the earlier ones fill it
    throttled = (by_address or 0) > ADDRESS_FAILURES or (by_account or 0) > ACCOUNT_FAILURES
    stored = user.password_hash if user is not None else dummy_hash()
    ok = await verify_password_async(stored, password)
    ok = ok and not throttled and user is not None and user.active
    async with db.write() as session:
        if ok:
            await session.execute(
                update(LoginAttempt).where(LoginAttempt.id == attempt_id).values(success=True)
            )
        if not ok or user is None:
            audit.record(
                session=session,
                action="login.throttled" if throttled else "login.failure",
                at=now,
                actor_id=user.id if user else None,
                subject_type="user",
                subject_id=user.id if user else "",
                source_address=address,
                details={"email_known": user is not None},
            )
            return LoginOutcome(error=THROTTLED if throttled else REFUSED, throttled=throttled)
        if replacing is not None:
            await logout(session=session, session_id=replacing, now=now, address=address)
        values: dict[str, object] = {"last_login_at": now}
        if needs_rehash(user.password_hash):
            values["password_hash"] = await hash_password_async(password)
        await session.execute(update(User).where(User.id == user.id).values(**values))
        token = secrets.token_urlsafe(32)
        row = WebSession(
            id=token_hash(token, secret),
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            idle_expires_at=now + IDLE_TIMEOUT,
            absolute_expires_at=now + ABSOLUTE_TIMEOUT,
            source_address=address,
        )
        session.add(row)
        audit.record(
            session=session,
            action="login.success",
            at=now,
            actor_id=user.id,
            subject_type="user",
            subject_id=user.id,
            source_address=address,
        )
    return LoginOutcome(
        token=token,
        user=SessionUser(row.id, user.id, user.email, user.name, user.role, row.csrf_token),
    )


async def locked_addresses(
    *, session: AsyncSession, email: str, unlocked_at: datetime | None, now: datetime
) -> int:
    """How many client addresses are throttled for this email now (``user list``)."""
    failures = _failures(now - THROTTLE_WINDOW).where(LoginAttempt.email == email)
    if unlocked_at is not None:
        failures = failures.where(LoginAttempt.at > unlocked_at)
    per_address = (
        failures.with_only_columns(LoginAttempt.source_address)
        .group_by(LoginAttempt.source_address)
        .having(func.count() >= ACCOUNT_FAILURES)
        .subquery()
    )
    return int(await session.scalar(select(func.count()).select_from(per_address)) or 0)


_LOOKUP = (
    select(
        WebSession.csrf_token,
        WebSession.last_seen_at,
        WebSession.idle_expires_at,
        WebSession.absolute_expires_at,
        WebSession.revoked_at,
        User.id,
        User.email,
        User.name,
        User.role,
        User.active,
    )
    .join(User, User.id == WebSession.user_id)
    .where(WebSession.id == bindparam("session_id"))
)


@dataclass(frozen=True, slots=True)
class Resumed:
    """A live session and, if it is due, the new expiry its touch should write."""

    user: SessionUser
    touch: tuple[datetime, datetime] | None  # (last_seen_at, idle_expires_at) to write


async def lookup(
    *, conn: AsyncConnection, token: str, now: datetime, touch: bool = True, secret: str = ""
) -> Resumed | None:
    """The live session for a cookie token, or None if unknown, revoked, its user
    deactivated, idle or past its absolute limit: one Core read (every page runs it).

    Nothing is written here: the touch that extends the idle expiry (due at most every
    ``TOUCH_EVERY``) is returned for ``write_touch``, so most pages cost no write at all.
    ``touch=False`` is for requests a page makes on its own (the queue's refresh): they
    read with the session but are not user activity, so they must not defeat the idle
    timeout (HIPAA automatic logoff) of a screen left open.
    """
    session_id = token_hash(token, secret)
    row = (await conn.execute(_LOOKUP, {"session_id": session_id})).first()
    if row is None:
        return None
    (csrf, last_seen, idle_at, absolute_at, revoked_at, user_id, email, name, role, active) = row
    if revoked_at is not None or not active or now >= idle_at or now >= absolute_at:
        return None
    due = None
    if touch and now - last_seen >= TOUCH_EVERY:
        due = (now, min(now + IDLE_TIMEOUT, absolute_at))
    return Resumed(SessionUser(session_id, user_id, email, name, role, csrf), due)


async def write_touch(
    *, session: AsyncSession, session_id: str, last_seen_at: datetime, idle_expires_at: datetime
) -> None:
    """Extend the idle expiry; a session revoked meanwhile stays revoked, and a later touch
    written first (concurrent requests) is not undone."""
    await session.execute(
        update(WebSession)
        .where(
            WebSession.id == session_id,
            WebSession.revoked_at.is_(None),
            WebSession.last_seen_at < last_seen_at,  # never moves the expiry back
        )
        .values(last_seen_at=last_seen_at, idle_expires_at=idle_expires_at)
        .execution_options(synchronize_session=False)
    )


async def logout(*, session: AsyncSession, session_id: str, now: datetime, address: str) -> None:
    row = await session.get(WebSession, session_id)
    if row is None or row.revoked_at is not None:
        return
    row.revoked_at = now
    audit.record(
        session=session,
        action="logout",
        at=now,
        actor_id=row.user_id,
        subject_type="user",
        subject_id=row.user_id,
        source_address=address,
    )


async def revoke_all(*, session: AsyncSession, user_id: int, now: datetime) -> None:
    """Deactivation and a password reset end every session of the user at once."""
    await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
