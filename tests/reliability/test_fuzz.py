"""Case 7: hostile webhook bodies with valid signatures, and the pure core fuzzed.

Webhooks. Hypothesis builds form bodies for ``POST /twilio/sms`` and
``POST /twilio/status`` from the fields Twilio sends, each kept, dropped, replaced or
repeated, plus random extra fields; values mix valid ones with arbitrary Unicode (RTL
overrides, emoji, combining marks, escaped surrogates written as ``\\ud800``), NULs,
percent-encoding debris and sizes up to and past the 64 KiB limit. Every body is signed
over exactly the parameters it carries, as Twilio would sign it, so the signature check
passes and the parser and handlers behind it are what gets tested. Each answer must be
the one an oracle derived from the documented rules predicts (200 TwiML, 400, 413),
never a 5xx, never a stack trace or exception name. Raw bodies (not UTF-8, broken
percent escapes, chunked) may also be 403, since no valid signature exists for them.
Afterwards the same app still runs a whole check-in over SMS.

Core. ``flows.engine.start``/``resume`` with random names and replies never raise;
``validate_flow_source`` and ``validate_protocol_source`` with random text, YAML-ish
token soup, random bytes, random structured data dumped to YAML and mutated library
definitions never raise and report every problem at line >= 1, column >= 1.

Sizes (``max_examples``): webhook bodies 200 per endpoint and backend, raw bodies 60,
engine 150, validators 150 per input family (see ``docs/reliability.md``).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from bot.library import flow_sources, protocol_sources
from bot.services import outbox
from bot.settings import is_e164
from bot.web.twilio_hooks import MAX_SID, MAX_WEBHOOK_BYTES, TWIML_EMPTY
from db.enums import CheckinStatus, Direction
from db.models import Answer, Message
from flows.definition import load_flow, validate_flow_source
from flows.engine import Context, Expired, ReminderDue, Reply, resume, start
from flows.problems import Problem
from flows.protocol import validate_protocol_source
from tests.conftest import drop_pg_database, new_pg_database, pg_url_for
from tests.web.harness import ACCOUNT_SID, AUTH_TOKEN, PUBLIC_BASE, Harness, harness

WEBHOOK_EXAMPLES = 200
RAW_EXAMPLES = 60
ENGINE_EXAMPLES = 150
VALIDATOR_EXAMPLES = 150

WEBHOOK = settings(
    max_examples=WEBHOOK_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
CORE = settings(
    deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

# What a crash looks like in a response: a traceback, a source location, an exception name.
LEAKS = re.compile(
    r"Traceback|most recent call last|File \"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b|"
    r"sqlalchemy|asyncpg|aiosqlite"
)

# -- the app under fuzz: one per backend, shared by the module's tests --------------------------


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def fuzz_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = new_pg_database(request.getfixturevalue("pg_template"))
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def h(fuzz_db_url: str) -> AsyncIterator[Harness]:
    async with harness(fuzz_db_url) as hh:
        yield hh


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def known_phone(h: Harness) -> str:
    """A patient in a running PHQ-9, so some fuzzed replies reach the conversation engine."""
    patient = await h.patient("Fuzz", phone="+12025550142")
    await h.start(patient, "phq9")
    return patient.phone


# -- strategies ------------------------------------------------------------------------------

SPECIALS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\u202eevil\u202c",  # RTL override
    "\u05e9\u05dc\u05d5\u05dd",  # Hebrew
    "\u0645\u0631\u062d\u0628\u0627",  # Arabic
    "\U0001f600\U0001f469\u200d\U0001f469\u200d\U0001f467",  # emoji, ZWJ sequence
    "e\u0301\u0301\u0301\u20dd",  # combining marks
    "\\ud800\\udfff",  # surrogates, escaped as text
    "\ufeffBOM",
    "\u200b\u200c\u200d\u2060",
    "%",
    "%00",
    "%zz",
    "%ff%fe",
    "&=&=",
    "+",
    "a=b&c",
    "\r\n\t\x0b\x0c",
    "'; DROP TABLE messages; --",
    "<Response><Message>x</Message></Response>",
    "STOP",
    "HELP",
    "3",
    "yes",
    "\u00b2",  # superscript two: isdigit() but not int()
    "\u0663",  # Arabic-Indic three
    "9" * 12,
]
weird_text = st.one_of(
    st.sampled_from(SPECIALS),
    st.text(max_size=40),
    st.text(
        alphabet=st.characters(categories=["Mn", "Me", "Cf", "Cc", "Zs", "So", "Nd", "No"]),
        max_size=20,
    ),
)
VALID: dict[str, st.SearchStrategy[str]] = {
    "MessageSid": st.from_regex(r"\ASM[0-9a-f]{32}\Z"),
    "AccountSid": st.just(ACCOUNT_SID),
    "From": st.one_of(
        st.just("+12025550142"),  # the fuzz patient, mid-conversation
        st.from_regex(r"\A\+1202555[0-9]{4}\Z"),
    ),
    "To": st.just("+12025550199"),
    "Body": st.sampled_from(["0", "1", "2", "3", "yes", "no", "STOP", "START", "HELP", "hi"]),
    "NumMedia": st.just("0"),
    "MessageStatus": st.sampled_from(
        ["queued", "sending", "sent", "delivered", "undelivered", "failed", "read", " Sent "]
    ),
    "ErrorCode": st.sampled_from(["", "30003", "0", " 7 "]),
}
EDGE: dict[str, list[str]] = {
    "MessageSid": ["", " ", "SM" + "1" * (MAX_SID - 2), "SM" + "0" * MAX_SID],
    "From": [
        "+1 202 555 0100",
        "12025550100",
        "+",
        "+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0660\u0660",
    ],
    "ErrorCode": ["1" * 9, "1" * 10, "\u00b2", "\u0663\u0660", "-1", "1e3"],
}


class Big(str):
    """A huge value with a short repr, so failing examples stay readable."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Big({self[:1]!r} * {len(self)})"


huge = st.sampled_from([4000, 60_000, 65_400, 65_536, 70_000, 200_000]).flatmap(
    lambda n: st.sampled_from(["x", "\u00e9", "\U0001f600", "%", "\x00"]).map(lambda c: Big(c * n))
)


def field_value(name: str) -> st.SearchStrategy[str]:
    """Mostly valid (so requests get past the first check), often edge, sometimes anything."""
    options = [VALID.get(name, weird_text)] * 5 + [weird_text] * 2
    if name in EDGE:
        options += [st.sampled_from(EDGE[name])] * 3
    if name == "Body":
        options.append(huge)
    return st.one_of(options)


SMS_BASE = ["MessageSid", "AccountSid", "From", "To", "Body", "NumMedia"]
STATUS_BASE = ["MessageSid", "MessageStatus", "ErrorCode", "AccountSid"]


@st.composite
def form_pairs(draw: st.DrawFn, base: list[str]) -> list[tuple[str, str]]:
    """Twilio's fields, each kept, dropped or repeated, plus random extra fields; shuffled."""
    pairs: list[tuple[str, str]] = []
    for name in base:
        times = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
        pairs.extend((name, draw(field_value(name))) for _ in range(times))
    extras = draw(
        st.lists(st.tuples(st.one_of(st.sampled_from(base), weird_text), weird_text), max_size=3)
    )
    pairs.extend(extras)
    return draw(st.permutations(pairs))


def signed_headers(path: str, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """The signature Twilio computes over exactly these parameters (repeated keys included:
    every value of a key, sorted), as the reference implementation does for a MultiDict."""
    validator = RequestValidator(AUTH_TOKEN)
    return {
        "X-Twilio-Signature": validator.compute_signature(PUBLIC_BASE + path, MultiDict(pairs)),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def expected_status(path: str, pairs: list[tuple[str, str]], size: int) -> int:
    """What the documented rules say the answer to a well-signed body must be."""
    if size > MAX_WEBHOOK_BYTES:
        return 413
    if any("\x00" in k or "\x00" in v for k, v in pairs):
        return 400
    fields = dict(pairs)
    sid = fields.get("MessageSid", "").strip()
    if not sid or len(sid) > MAX_SID:
        return 400
    if path == "/twilio/sms":
        sender = fields.get("From", "").strip()
        return 200 if sender and is_e164(sender) else 400
    try:
        outbox.parse_status(fields.get("MessageStatus", "").strip())
    except outbox.UnknownStatusError:
        return 400
    code = fields.get("ErrorCode", "").strip()
    if code and not (code.isdecimal() and len(code) <= 9):
        return 400
    return 200


async def check_answer(resp: Any, sent: str, allowed: set[int]) -> tuple[int, str]:
    text = await resp.text(errors="replace")
    assert resp.status in allowed, (resp.status, text[:300], sent[:300])
    leaks = {m for m in LEAKS.findall(text) if m not in sent}
    assert not leaks, (leaks, text[:300])
    if resp.status == 200:
        assert text == TWIML_EMPTY
        assert resp.content_type == "text/xml"
    return resp.status, text


async def post_pairs(h: Harness, path: str, pairs: list[tuple[str, str]]) -> None:
    body = urlencode(pairs).encode("ascii")
    assert parse_qsl(body.decode(), keep_blank_values=True) == pairs  # what is signed is sent
    want = expected_status(path, pairs, len(body))
    resp = await h.client.post(path, data=body, headers=signed_headers(path, pairs))
    status, _text = await check_answer(resp, body.decode(), {200, 400, 413})
    assert status == want, (status, want, pairs[:6])
    await h.drain()


# -- webhooks ---------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
@WEBHOOK
@given(pairs=form_pairs(SMS_BASE))
async def test_inbound_sms_fuzz(h: Harness, known_phone: str, pairs: list[tuple[str, str]]) -> None:
    await post_pairs(h, "/twilio/sms", pairs)


@pytest.mark.asyncio(loop_scope="module")
@WEBHOOK
@given(pairs=form_pairs(STATUS_BASE))
async def test_status_callback_fuzz(h: Harness, pairs: list[tuple[str, str]]) -> None:
    await post_pairs(h, "/twilio/status", pairs)


RAW_PIECES = [
    b"MessageSid=SM" + b"a" * 32,
    b"From=%2B12025550142",
    b"MessageStatus=delivered",
    b"Body=%",
    b"Body=%G1",
    b"Body=%e9",  # percent-decodes to a byte that is not UTF-8
    b"Body=%ED%A0%80",  # an encoded surrogate
    b"Body=\xff\xfe",  # raw bytes that are not UTF-8
    b"Body=\xc3",
    b"Body=caf\xc3\xa9",
    b"Body=a%00b",
    b"=",
    b"&&",
    b"a",
    b";;",
    b"Body=%%%",
    b"Body=+%2B+",
    b"From=%2B1202555014%32",
    b"\x00=\x00",
]


@pytest.mark.asyncio(loop_scope="module")
@settings(WEBHOOK, max_examples=RAW_EXAMPLES)
@given(
    path=st.sampled_from(["/twilio/sms", "/twilio/status"]),
    pieces=st.lists(st.one_of(st.sampled_from(RAW_PIECES), st.binary(max_size=30)), max_size=8),
)
async def test_raw_bodies(h: Harness, path: str, pieces: list[bytes]) -> None:
    """Bodies no client library would write; signed over what they parse to, when they parse."""
    body = b"&".join(pieces)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
        headers = signed_headers(path, pairs)
        want = {expected_status(path, pairs, len(body))}
    except UnicodeError:  # no valid signature exists for what cannot be decoded
        headers = {
            "X-Twilio-Signature": "AAAA",
            "Content-Type": "application/x-www-form-urlencoded",
        }
        want = {403}
    resp = await h.client.post(path, data=body, headers=headers)
    status, _ = await check_answer(resp, body.decode("utf-8", "replace"), {200, 400, 403, 413})
    assert status in want, (status, want, body[:200])
    await h.drain()


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "size", [MAX_WEBHOOK_BYTES - 1, MAX_WEBHOOK_BYTES, MAX_WEBHOOK_BYTES + 1, 1 << 20]
)
async def test_size_limit_exactly(h: Harness, size: int) -> None:
    """Bodies right at the limit: up to 64 KiB handled, one byte more refused, chunked too."""
    head = [("MessageSid", "SM" + "f" * 32), ("From", "+12025550111"), ("Body", "")]
    filler = size - len(urlencode(head).encode())
    pairs = [*head[:2], ("Body", "x" * filler)]
    body = urlencode(pairs).encode()
    assert len(body) == size
    want = 413 if size > MAX_WEBHOOK_BYTES else 200
    resp = await h.client.post(
        "/twilio/sms", data=body, headers=signed_headers("/twilio/sms", pairs)
    )
    assert (await check_answer(resp, "", {200, 413}))[0] == want

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    pairs[0] = ("MessageSid", "SM" + "e" * 32)
    body = urlencode(pairs).encode()
    resp = await h.client.post(
        "/twilio/sms", data=chunks(), headers=signed_headers("/twilio/sms", pairs)
    )
    assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
    assert (await check_answer(resp, "", {200, 413}))[0] == want
    await h.drain()


@pytest.mark.asyncio(loop_scope="module")
async def test_the_app_still_works_after_the_fuzzing(h: Harness, known_phone: str) -> None:
    """A new patient's whole daily_mood check-in over SMS, and a status callback, still work."""
    assert (await h.client.get("/healthz")).status == 200
    patient = await h.patient("After", phone="+12025550143")
    checkin = await h.start(patient, "daily_mood")
    resp = await h.sms(patient.phone, "7")
    assert resp.status == 200 and await resp.text() == TWIML_EMPTY
    async with h.db.read() as s:
        answers = (await s.scalars(select(Answer).where(Answer.checkin_id == checkin.id))).all()
        inbound = await s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.patient_id == patient.id, Message.direction == Direction.IN)
        )
        out = (
            await s.scalars(
                select(Message).where(
                    Message.patient_id == patient.id, Message.direction == Direction.OUT
                )
            )
        ).all()
    assert len(answers) >= 1 and inbound == 1
    sent = [m for m in out if m.provider_sid]
    assert sent, "no outbound message reached the fake Twilio"
    resp = await h.status(sent[0].provider_sid or "", "delivered")
    assert resp.status == 200
    await h.send_outbox()
    checkins = await h.checkins(patient)
    assert checkins[0].status in {CheckinStatus.ACTIVE, CheckinStatus.COMPLETED}


# -- the pure core -------------------------------------------------------------------------------

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
FLOWS = {key: load_flow(text) for key, text in flow_sources().items()}
names = st.one_of(
    st.sampled_from(["Ana", "{first_name}", "{question}", "{{7*7}}", "{", "}", "\x00", "x" * 5000]),
    weird_text,
)
replies = st.one_of(
    weird_text, st.text(max_size=2000), st.sampled_from(["0", "1", "3", "10", "yes"])
)


@settings(CORE, max_examples=ENGINE_EXAMPLES)
@given(
    key=st.sampled_from(sorted(FLOWS)),
    first_name=names,
    clinic=weird_text,
    language=st.one_of(st.sampled_from(["en", "es", "fr", ""]), weird_text),
    script=st.lists(
        st.one_of(replies.map(Reply), st.just(ReminderDue()), st.just(Expired())), max_size=8
    ),
)
def test_engine_never_raises(
    key: str, first_name: str, clinic: str, language: str, script: list[Any]
) -> None:
    flow = FLOWS[key]
    step = start(flow, Context(first_name, language=language, clinic_name=clinic), NOW)
    for item in script:
        step = resume(flow, step.state, item, NOW)
    for event in step.events:
        assert event is not None


def assert_problems(result: tuple[object | None, list[Problem]]) -> None:
    value, problems = result
    assert isinstance(problems, list)
    for p in problems:
        assert isinstance(p, Problem)
        assert isinstance(p.line, int) and p.line >= 1, p
        assert isinstance(p.column, int) and p.column >= 1, p
        assert isinstance(p.message, str) and p.message.strip(), p
    if value is None:
        assert any(p.is_error for p in problems), "rejected without saying why"
    else:
        assert not any(p.is_error for p in problems)


def validate_both(text: str | bytes) -> None:
    assert_problems(validate_flow_source(text))
    assert_problems(validate_flow_source(text, known_flows=set(FLOWS)))
    assert_problems(validate_protocol_source(text))
    assert_problems(validate_protocol_source(text, known_flows=set(FLOWS)))


TOKENS = [
    "key:", "title:", "nodes:", "checkins:", "flow:", "at:", "every:", "- ", "-", ":", " ",
    "  ", "    ", "\n", "\t", "{", "}", "[", "]", ",", "?", "&a ", "*a", "!!python/object:os.system",
    "!!binary", "|", ">", "---", "...", "%YAML 1.1", "#", '"', "'", "\\ud800", '"\\ud800"',
    "id: q1", "type: ask", "type: end", "text: hi", "next: done", "answer: {type: integer}",
    "1d", "-1w", "10:00", "99:99", "null", "~", "yes", "1e999", "0x1F", "<<: *a", "\x00", "\ufeff",
]  # fmt: skip
yamlish = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    weird_text,
    st.sampled_from(["1d", "2w", "P1D", "09:00", "phq9", "ask", "end", "integer", "scale"]),
)
structured = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    [
                        "key",
                        "title",
                        "nodes",
                        "id",
                        "type",
                        "text",
                        "next",
                        "answer",
                        "checkins",
                        "flow",
                        "at",
                        "every",
                        "scores",
                        "escalate",
                        "language",
                        "windows",
                    ]
                ),
                st.text(max_size=8),
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=25,
)
LIBRARY = [yaml.safe_load(t) for t in [*flow_sources().values(), *protocol_sources().values()]]


@st.composite
def mutated_library(draw: st.DrawFn) -> Any:
    """A library definition with one subtree replaced by random data."""
    data = draw(st.sampled_from(LIBRARY))
    copy = yaml.safe_load(yaml.safe_dump(data))
    node: Any = copy
    for _ in range(draw(st.integers(0, 4))):
        if isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node, key=str)))
            if not isinstance(node[key], dict | list) or draw(st.booleans()):
                node[key] = draw(structured)
                return copy
            node = node[key]
        elif isinstance(node, list) and node:
            i = draw(st.integers(0, len(node) - 1))
            if not isinstance(node[i], dict | list) or draw(st.booleans()):
                node[i] = draw(structured)
                return copy
            node = node[i]
    return copy


@settings(CORE, max_examples=VALIDATOR_EXAMPLES)
@given(text=st.one_of(st.text(max_size=400), yamlish))
def test_validators_on_random_text(text: str) -> None:
    validate_both(text)


@settings(CORE, max_examples=VALIDATOR_EXAMPLES)
@given(raw=st.binary(max_size=400))
def test_validators_on_random_bytes(raw: bytes) -> None:
    validate_both(raw)


@settings(CORE, max_examples=VALIDATOR_EXAMPLES)
@given(data=st.one_of(structured, mutated_library()), style=st.sampled_from([None, True, False]))
def test_validators_on_random_structured_yaml(data: Any, style: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=style, allow_unicode=True)
    validate_both(text)


# -- what the fuzzing found, pinned down ------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", ["/twilio/sms", "/twilio/status"])
async def test_repeated_keys_are_not_a_server_error(h: Harness, path: str) -> None:
    """Twilio signs every value of a repeated key; the server must verify, not crash (was 500)."""
    pairs = [
        ("MessageSid", "SM" + "c" * 32),
        ("MessageSid", "SM" + "c" * 32),
        ("From", "+12025550144"),
        ("MessageStatus", "delivered"),
    ]
    body = urlencode(pairs).encode()
    resp = await h.client.post(path, data=body, headers=signed_headers(path, pairs))
    assert (await check_answer(resp, body.decode(), {200, 400}))[0] == 200
    forged = {**signed_headers(path, pairs), "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
    resp = await h.client.post(path, data=body, headers=forged)
    assert (await check_answer(resp, body.decode(), {403}))[0] == 403


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("code", ["\u00b2", "\u00b9\u00b2", "\u2460"])
async def test_error_code_that_is_a_digit_but_not_a_number_is_400(h: Harness, code: str) -> None:
    """``'\u00b2'.isdigit()`` is true but ``int('\u00b2')`` raises (was 500)."""
    pairs = [("MessageSid", "SM" + "d" * 32), ("MessageStatus", "failed"), ("ErrorCode", code)]
    body = urlencode(pairs).encode()
    resp = await h.client.post(
        "/twilio/status", data=body, headers=signed_headers("/twilio/status", pairs)
    )
    assert (await check_answer(resp, body.decode(), {400}))[0] == 400


@pytest.mark.asyncio(loop_scope="module")
async def test_phone_numbers_with_non_ascii_digits_are_not_e164(h: Harness) -> None:
    """E.164 is ``+`` and ASCII digits; Arabic-Indic digits were accepted as a sender (200) and
    by the API as a patient's phone, a second spelling of a number already in use."""
    arabic = "+\u0661\u0662\u0660\u0662\u0665\u0665\u0665\u0660\u0661\u0664\u0662"  # +12025550142
    assert not is_e164(arabic)
    pairs = [("MessageSid", "SM" + "e" * 31 + "f"), ("From", arabic), ("Body", "hi")]
    body = urlencode(pairs).encode()
    resp = await h.client.post(
        "/twilio/sms", data=body, headers=signed_headers("/twilio/sms", pairs)
    )
    assert (await check_answer(resp, body.decode(), {400}))[0] == 400


@pytest.mark.parametrize("text", ["\x1f", "key: a\x01", "title: x\x7f\nkey: y", b"k: \x02"])
def test_validators_report_control_characters_as_problems(text: str | bytes) -> None:
    """PyYAML's ReaderError is not a MarkedYAMLError; it escaped both validators (and reached
    PUT /api/v1/{kind}/{key}/draft as a 500)."""
    validate_both(text)
