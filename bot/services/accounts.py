"""Users and API tokens: one function per change, shared by the CLI, pages and API.

Every change is audited with who made it (``actor_id``; None from the command
line) and where (``source``: "cli" or "web").
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bot.security.passwords import check_password, hash_password_async
from bot.services import sessions
from bot.settings import is_e164
from db import audit
from db.enums import EscalationStatus, Role
from db.models import ApiToken, Escalation, User

TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 366

TOKEN_PREFIX = "act_"  # noqa: S105 - a prefix, not a secret


class AccountError(ValueError):
    pass


class NoSuchAccount(AccountError):
    """The user or token named does not exist (a 404 on the pages)."""


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are long random strings, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Change:
    """Who changes an account, for the audit trail."""

    now: datetime
    actor_id: int | None = None
    source: str = "cli"
    address: str = ""


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    role: Role
    password: str
    name: str = ""
    phone: str | None = None
    on_call: bool = False


async def _check(password: str, user_inputs: tuple[str, ...]) -> None:
    """The strength estimate is CPU work: in a thread, like the hashing."""
    await asyncio.to_thread(check_password, password, user_inputs=user_inputs)


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email or len(email) > 254:
        raise AccountError(f"not a valid email address: {email!r}")
    return email


async def create_user(
    *,
    session: AsyncSession,
    new: NewUser,
    now: datetime,
    clinic_name: str = "",
    actor_id: int | None = None,
    source: str = "cli",
) -> User:
    email = normalize_email(new.email)
    await _check(new.password, (email, new.name, clinic_name))
    if new.phone is not None and not is_e164(new.phone):
        raise AccountError("phone must be in E.164 form, like +15551234567")
    exists = await session.scalar(select(func.count()).select_from(User).where(User.email == email))
    if exists:
        raise AccountError(f"a user with email {email} already exists")
    user = User(
        email=email,
        name=new.name.strip(),
        role=new.role,
        password_hash=await hash_password_async(new.password),
        phone=new.phone,
        on_call=new.on_call,
        active=True,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    audit.record(
        session=session,
        action="user.create",
        at=now,
        actor_id=actor_id,
        subject_type="user",
        subject_id=user.id,
        details={"role": str(new.role), "source": source},
    )
    return user


async def create_token(
    *, session: AsyncSession, email: str, label: str, now: datetime, days: int = TOKEN_DAYS
) -> tuple[User, str]:
    """Return the user and the new token, which is shown once and stored only hashed."""
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise AccountError(f"--days must be from 1 to {MAX_TOKEN_DAYS}")
    user = await find_user(session, email)
    if not user.active:
        raise AccountError(f"user {user.email} is deactivated")
    token = new_token()
    session.add(
        ApiToken(
            user_id=user.id,
            token_hash=hash_token(token),
            label=label,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
    )
    audit.record(
        session=session,
        action="token.create",
        at=now,
        actor_id=user.id,
        subject_type="user",
        subject_id=user.id,
        details={"label": label, "days": days},
    )
    return user, token


async def find_user(session: AsyncSession, email: str) -> User:
    user = await session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NoSuchAccount(f"no user with email {email.strip().lower()}")
    return user


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NoSuchAccount(f"no user with id {user_id}")
    return user


@dataclass(frozen=True, slots=True)
class Account:
    user: User
    locked: bool  # some client address is throttled for this email now


async def list_users(*, session: AsyncSession, now: datetime) -> list[Account]:
    users = (await session.scalars(select(User).order_by(User.email))).all()
    return [
        Account(
            user,
            await sessions.locked_addresses(
                session=session, email=user.email, unlocked_at=user.unlocked_at, now=now
            )
            > 0,
        )
        for user in users
    ]


def _record(
    session: AsyncSession, change: Change, action: str, user: User, **details: object
) -> None:
    audit.record(
        session=session,
        action=action,
        at=change.now,
        actor_id=change.actor_id,
        subject_type="user",
        subject_id=user.id,
        source_address=change.address,
        details={"source": change.source, **details},
    )


async def _end_access(session: AsyncSession, user: User, now: datetime) -> None:
    """End every session and API token of the user, at once."""
    await sessions.revoke_all(session=session, user_id=user.id, now=now)
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def _keep_an_admin(session: AsyncSession, user: User) -> None:
    """Refuse to remove the last active admin: nobody could manage users or flows after."""
    if user.role is not Role.ADMIN or not user.active:
        return
    admins = await session.scalar(
        select(func.count()).select_from(User).where(User.role == Role.ADMIN, User.active.is_(True))
    )
    if (admins or 0) <= 1:
        raise AccountError(f"{user.email} is the last active admin; make another admin first")


async def deactivate(*, session: AsyncSession, user: User, change: Change) -> None:
    """The user can no longer sign in or use a token; their sessions and tokens end now,
    and the escalations they had claimed go back to the queue. Their records and audit
    trail stay."""
    if change.actor_id == user.id:
        raise AccountError("you cannot deactivate your own account")
    await _keep_an_admin(session, user)
    user.active = False
    user.on_call = False
    await _end_access(session, user, change.now)
    # their claims go back to the queue: a claimed item is never paged again, so one held
    # by somebody who can no longer sign in would wait unseen
    released = await session.execute(
        update(Escalation)
        .where(Escalation.claimed_by == user.id, Escalation.status == EscalationStatus.CLAIMED)
        .values(status=EscalationStatus.OPEN, claimed_by=None, claimed_at=None)
        .returning(Escalation.id)
    )
    _record(session, change, "user.deactivate", user, released=[row[0] for row in released.all()])


async def reactivate(*, session: AsyncSession, user: User, change: Change) -> None:
    user.active = True
    user.unlocked_at = change.now
    _record(session, change, "user.reactivate", user)


async def unlock(*, session: AsyncSession, user: User, change: Change) -> None:
    """Forgive the failed sign-ins so far, from every address."""
    user.unlocked_at = change.now
    _record(session, change, "user.unlock", user)


async def set_role(*, session: AsyncSession, user: User, role: Role, change: Change) -> None:
    if role is user.role:
        return
    if role is not Role.ADMIN:
        await _keep_an_admin(session, user)
    _record(session, change, "user.set_role", user, role=str(role), was=str(user.role))
    user.role = role


async def reset_password(
    *, session: AsyncSession, user: User, password: str, change: Change, clinic_name: str = ""
) -> None:
    """A new password (checked like any); the user's sessions and tokens end, so whoever
    held the old one is out."""
    await _check(password, (user.email, user.name, clinic_name))
    user.password_hash = await hash_password_async(password)
    user.unlocked_at = change.now
    await _end_access(session, user, change.now)
    _record(session, change, "user.reset_password", user)


async def set_on_call(
    *, session: AsyncSession, user: User, on_call: bool, phone: str | None, change: Change
) -> None:
    """The on-call rota: who is paged first, and at which number."""
    if phone is not None:
        phone = phone.strip() or None
        if phone is not None and not is_e164(phone):
            raise AccountError("phone must be in E.164 form, like +15551234567")
        user.phone = phone
    if on_call and not user.active:
        raise AccountError(f"{user.email} is deactivated")
    if on_call and not user.phone:
        raise AccountError(f"{user.email} has no phone to be paged at; add one first")
    user.on_call = on_call
    _record(session, change, "user.on_call", user, on_call=on_call)


@dataclass(frozen=True, slots=True)
class TokenRow:
    id: int
    email: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


async def list_tokens(*, session: AsyncSession, email: str | None = None) -> list[TokenRow]:
    """Never the secret: only its metadata."""
    query = (
        select(
            ApiToken.id,
            User.email,
            ApiToken.label,
            ApiToken.created_at,
            ApiToken.last_used_at,
            ApiToken.expires_at,
            ApiToken.revoked_at,
        )
        .join(User, User.id == ApiToken.user_id)
        .order_by(ApiToken.id)
    )
    if email is not None:
        query = query.where(User.email == email.strip().lower())
    return [TokenRow(*row) for row in (await session.execute(query)).all()]


async def revoke_token(*, session: AsyncSession, token_id: int, change: Change) -> None:
    token = await session.get(ApiToken, token_id)
    if token is None:
        raise NoSuchAccount(f"no token with id {token_id}")
    if token.revoked_at is None:
        token.revoked_at = change.now
    audit.record(
        session=session,
        action="token.revoke",
        at=change.now,
        actor_id=change.actor_id,
        subject_type="user",
        subject_id=token.user_id,
        source_address=change.address,
        details={"source": change.source, "token_id": token_id},
    )
