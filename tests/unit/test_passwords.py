"""Password rules and the argon2id parameters, read back from the stored hash itself."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from argon2 import PasswordHasher, Type

from bot.security import passwords
from bot.security.passwords import (
    MIN_LENGTH,
    PasswordRejected,
    check_password,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)

GOOD = "correct horse battery staple"
OWASP_MEMORY_KIB = 19 * 1024
ARGON2 = re.compile(
    r"^\$argon2id\$v=(\d+)\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"
)


def params(encoded: str) -> tuple[int, int, int, int]:
    match = ARGON2.match(encoded)
    assert match, encoded
    version, m, t, p = (int(g) for g in match.groups())
    return version, m, t, p


def test_minimum_length_is_12() -> None:
    assert MIN_LENGTH == 12
    with pytest.raises(PasswordRejected, match="at least 12"):
        check_password("Xq7#mVb2!kL")  # 11 characters
    check_password("Xq7#mVb2!kLp")  # 12


def test_too_long_is_rejected() -> None:
    with pytest.raises(PasswordRejected, match="at most"):
        check_password("Xq7#" * 100)


def _common_list() -> list[str]:
    text = resources.files("bot.security").joinpath("common_passwords.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_common_passwords_are_rejected_whatever_the_case() -> None:
    long_enough = [p for p in _common_list() if len(p) >= MIN_LENGTH]
    assert long_enough, "the common list has no entries of 12+ characters to test with"
    for candidate in long_enough[:50]:
        for variant in (candidate, candidate.upper(), candidate.title()):
            with pytest.raises(PasswordRejected, match="too common"):
                check_password(variant)


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaaaaaa", "abababababababab", "abcabcabcabcabc"])
def test_trivially_simple_passwords_are_rejected(weak: str) -> None:
    with pytest.raises(PasswordRejected):
        check_password(weak)


def test_a_good_passphrase_passes() -> None:
    check_password(GOOD)
    check_password("Ünïcödé pässwörd 2026")


def test_hash_is_argon2id_with_at_least_owasp_parameters() -> None:
    encoded = hash_password(GOOD)
    version, memory_kib, iterations, parallelism = params(encoded)
    assert encoded.startswith("$argon2id$")
    assert version == 19
    assert memory_kib >= OWASP_MEMORY_KIB
    assert iterations >= 2
    assert parallelism == 1


def test_hashes_are_salted() -> None:
    a, b = hash_password(GOOD), hash_password(GOOD)
    assert a != b
    assert verify_password(a, GOOD) and verify_password(b, GOOD)


def test_verify() -> None:
    encoded = hash_password(GOOD)
    assert verify_password(encoded, GOOD)
    assert not verify_password(encoded, GOOD + " ")
    assert not verify_password(encoded, "")
    assert not verify_password("not a hash", GOOD)
    assert not verify_password("", GOOD)


def test_needs_rehash_for_weaker_or_other_parameters() -> None:
    assert not needs_rehash(hash_password(GOOD))
    weaker = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
    old = weaker.hash(GOOD)
    assert needs_rehash(old)
    assert verify_password(old, GOOD)  # still verifies, so login can upgrade it
    argon2i = PasswordHasher(time_cost=2, memory_cost=OWASP_MEMORY_KIB, parallelism=1, type=Type.I)
    assert needs_rehash(argon2i.hash(GOOD))


def test_dummy_hash_is_a_real_hash_with_the_same_cost() -> None:
    dummy = dummy_hash()
    assert params(dummy) == params(hash_password(GOOD))
    assert dummy is dummy_hash()  # computed once
    assert not verify_password(dummy, GOOD)


def test_module_hasher_matches_the_documented_parameters() -> None:
    hasher = passwords._hasher
    assert hasher.type is Type.ID
    assert hasher.memory_cost >= OWASP_MEMORY_KIB
    assert hasher.time_cost >= 2
    assert hasher.parallelism == 1


def test_session_keys_depend_on_the_secret_key() -> None:
    from bot.services.sessions import token_hash

    token = "a-random-cookie-token"
    assert token_hash(token, "k" * 40) == token_hash(token, "k" * 40)
    assert token_hash(token, "k" * 40) != token_hash(token, "j" * 40)
    assert token not in token_hash(token, "k" * 40)
