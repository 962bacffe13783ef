"""Password rules and argon2id hashing (OWASP: 19 MiB, 2 iterations, parallelism 1)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 256

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=Type.ID)


class PasswordRejected(ValueError):
    pass


@cache
def _common() -> frozenset[str]:
    text = resources.files("bot.security").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().casefold()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


def check_password(password: str) -> None:
    """Raise :class:`PasswordRejected` saying what to change."""
    if len(password) < MIN_LENGTH:
        raise PasswordRejected(f"password must be at least {MIN_LENGTH} characters long")
    if len(password) > MAX_LENGTH:
        raise PasswordRejected(f"password must be at most {MAX_LENGTH} characters long")
    if password.casefold() in _common() or len(set(password)) < 4:
        raise PasswordRejected("password is too common or too simple; choose a less guessable one")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


@cache
def dummy_hash() -> str:
    """A valid hash to verify against when the account does not exist, so timing
    does not reveal which emails have accounts (computed once, on first use)."""
    return _hasher.hash("not-a-real-password-for-timing")
