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

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bot.security.passwords import dummy_hash, hash_password, needs_rehash, verify_password
from db import audit
from db.enums import Role
from db.models import LoginAttempt, User, WebSession

IDLE_TIMEOUT = timedelta(minutes=15)
ABSOLUTE_TIMEOUT = timedelta(hours=12)
TOUCH_EVERY = timedelta(seconds=30)
ACCOUNT_FAILURES = 5
ADDRESS_FAILURES = 20
THROTTLE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)


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


class LoginError(Exception):
    def __init__(self, message: str, *, throttled: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.throttled = throttled


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    token: str | None = None
    user: SessionUser | None = None
    error: str = ""
    throttled: bool = False


async def login(
    *,
    session: AsyncSession,
    email: str,
    password: str,
    address: str,
    now: datetime,
    secret: str = "",
) -> LoginOutcome:
    """Check throttles and the password. Failures are recorded too, so the caller commits
    whatever the outcome."""
    try:
        token, user = await _login(
            session=session, email=email, password=password, address=address, now=now, secret=secret
        )
    except LoginError as exc:
        return LoginOutcome(error=exc.message, throttled=exc.throttled)
    return LoginOutcome(token=token, user=user)


async def _login(
    *, session: AsyncSession, email: str, password: str, address: str, now: datetime, secret: str
) -> tuple[str, SessionUser]:
    email = email.strip().lower()[:254]
    since = now - THROTTLE_WINDOW
    address_failures = await session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(
            LoginAttempt.source_address == address,
            LoginAttempt.success.is_(False),
            LoginAttempt.at >= since,
        )
    )
    if (address_failures or 0) >= ADDRESS_FAILURES:
        raise LoginError(
            "Too many failed sign-ins from this address. Wait 15 minutes and try again.",
            throttled=True,
        )
    user = await session.scalar(select(User).where(User.email == email))
    if user is not None and user.locked_until is not None and user.locked_until > now:
        _attempt(session, email, address, False, now)
        raise LoginError(
            "This account is locked after repeated failed sign-ins. Try again in 15 minutes "
            "or ask an admin.",
            throttled=True,
        )
    ok = verify_password(user.password_hash if user else dummy_hash(), password)
    if user is None or not ok or not user.active:
        _attempt(session, email, address, False, now)
        audit.record(
            session=session,
            action="login.failure",
            at=now,
            actor_id=user.id if user else None,
            subject_type="user",
            subject_id=user.id if user else "",
            source_address=address,
            details={"email_known": user is not None},
        )
        if user is not None:
            user.failed_logins += 1
            if user.failed_logins >= ACCOUNT_FAILURES:
                user.locked_until = now + LOCKOUT
                user.failed_logins = 0
        raise LoginError("Email or password is not right.")
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    _attempt(session, email, address, True, now)
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
    return token, SessionUser(row.id, user.id, user.email, user.name, user.role, row.csrf_token)


def _attempt(session: AsyncSession, email: str, address: str, success: bool, now: datetime) -> None:
    session.add(LoginAttempt(email=email, source_address=address, success=success, at=now))


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
    """Deactivation ends every session of the user at once."""
    await session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )
