"""Password rules and the argon2id parameters, read back from the stored hash itself."""

from __future__ import annotations

import re

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


@pytest.mark.parametrize(
    "weak",
    [
        "Password123!",  # the old hand-kept list let this one through
        "password1234",
        "Qwerty123456",
        "iloveyou2026!",
        "aaaaaaaaaaaaaaaa",
        "abababababababab",
        "abcabcabcabcabc",
    ],
)
def test_guessable_passwords_are_rejected_with_advice(weak: str) -> None:
    with pytest.raises(PasswordRejected, match="too easy to guess") as refused:
        check_password(weak)
    assert "passphrase" in str(refused.value)  # says how to choose better


def test_the_users_own_details_and_the_clinic_name_count_as_guessable() -> None:
    candidate = "jane.doe@northside.org"
    check_password(candidate)  # strong enough for a stranger
    with pytest.raises(PasswordRejected):
        check_password(
            candidate,
            user_inputs=("jane.doe@northside.org", "Jane Doe", "Northside Clinic"),
        )


def test_a_good_passphrase_passes() -> None:
    check_password(GOOD)
    check_password("Ünïcödé pässwörd 2026")
    check_password("kX9#mq2Lp!ve")
    check_password("bramble otter " + "x" * 100)  # judged on its start, accepted


async def test_hashing_and_verifying_run_off_the_event_loop() -> None:
    encoded = await passwords.hash_password_async(GOOD)
    assert await passwords.verify_password_async(encoded, GOOD)
    assert not await passwords.verify_password_async(encoded, "wrong")


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
