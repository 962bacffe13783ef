"""Users and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.security.passwords import check_password, hash_password
from bot.settings import is_e164
from db import audit
from db.enums import Role
from db.models import ApiToken, User

TOKEN_PREFIX = "act_"  # noqa: S105 - a prefix, not a secret


class AccountError(ValueError):
    pass


def hash_token(token: str) -> str:
    """Tokens are stored as SHA-256: they are long random strings, so no salt or KDF is needed."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    role: Role
    password: str
    name: str = ""
    phone: str | None = None
    on_call: bool = False


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email or len(email) > 254:
        raise AccountError(f"not a valid email address: {email!r}")
    return email


async def create_user(*, session: AsyncSession, new: NewUser, now: datetime) -> User:
    email = normalize_email(new.email)
    check_password(new.password)
    if new.phone is not None and not is_e164(new.phone):
        raise AccountError("phone must be in E.164 form, like +15551234567")
    exists = await session.scalar(select(func.count()).select_from(User).where(User.email == email))
    if exists:
        raise AccountError(f"a user with email {email} already exists")
    user = User(
        email=email,
        name=new.name.strip(),
        role=new.role,
        password_hash=hash_password(new.password),
        phone=new.phone,
        on_call=new.on_call,
        active=True,
        failed_logins=0,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    audit.record(
        session=session,
        action="user.create",
        at=now,
        subject_type="user",
        subject_id=user.id,
        details={"role": str(new.role), "source": "cli"},
    )
    return user


async def create_token(
    *, session: AsyncSession, email: str, label: str, now: datetime
) -> tuple[User, str]:
    """Return the user and the new token, which is shown once and stored only hashed."""
    user = await session.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise AccountError(f"no user with email {email.strip().lower()}")
    if not user.active:
        raise AccountError(f"user {user.email} is deactivated")
    token = new_token()
    session.add(
        ApiToken(user_id=user.id, token_hash=hash_token(token), label=label, created_at=now)
    )
    audit.record(
        session=session,
        action="token.create",
        at=now,
        actor_id=user.id,
        subject_type="user",
        subject_id=user.id,
        details={"label": label},
    )
    return user, token
