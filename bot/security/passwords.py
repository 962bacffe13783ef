"""Password rules (NIST SP 800-63B) and argon2id hashing (OWASP: 19 MiB, 2 iterations).

Strength is judged by zxcvbn, whose shipped lists of common passwords, names and
words outlast any list kept by hand; the clinic's name and the user's own email
and name count as guessable too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from functools import cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

MIN_LENGTH = 12
MAX_LENGTH = 256
MIN_SCORE = 3  # zxcvbn: "safely unguessable", about 10^8 guesses or more
_ESTIMATED_LENGTH = 72  # zxcvbn's own bound; a longer password is no weaker than its start

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)

ADVICE = (
    "Choose a longer passphrase of four or more unrelated words, or a password manager's "
    "random password; avoid names, dates, your email and the clinic's name."
)


class PasswordRejected(ValueError):
    pass


def _user_inputs(values: Iterable[str]) -> list[str]:
    """Each value and its parts (an email's local part and domain, a name's words)."""
    out: list[str] = []
    for value in values:
        value = value.strip().casefold()
        if not value:
            continue
        out.append(value)
        local, _, domain = value.partition("@")
        out.extend(part for part in (local, domain.split(".")[0], *value.split()) if len(part) > 2)
    return out


def check_password(password: str, *, user_inputs: Iterable[str] = ()) -> None:
    """Raise :class:`PasswordRejected` saying what is wrong and how to choose better.

    CPU-bound (a few milliseconds): web handlers run it in a thread."""
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_LENGTH} characters long")
    result = zxcvbn(password[:_ESTIMATED_LENGTH], user_inputs=_user_inputs(user_inputs))
    if result["score"] < MIN_SCORE:
        feedback = result["feedback"]
        why = feedback.get("warning") or "This password would be easy to guess."
        raise PasswordRejected(f"password is too easy to guess. {why.rstrip('.')}. {ADVICE}")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    """``hash_password`` in a thread: argon2 takes tens of milliseconds of CPU by design."""
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@cache
def dummy_hash() -> str:
    """A valid hash to verify against when the account does not exist, so timing
    does not reveal which emails have accounts (computed once, on first use)."""
    return _hasher.hash("not-a-real-password-for-timing")
