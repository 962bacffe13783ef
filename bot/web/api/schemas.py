"""Request bodies of the API, validated with pydantic (422 names the field)."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from bot.settings import is_e164
from bot.web.api.errors import ApiError
from db.enums import Disposition, PatientStatus

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_VERSION = 2**31 - 1
MAX_ID = 2**31 - 1
"""Row ids are 32-bit integers in the database."""

_YEAR = "(20[0-9]{2}|2100)"  # MIN_YEAR to MAX_YEAR
_MONTH_DAY = "(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_HH_MM = "([01][0-9]|2[0-3]):[0-5][0-9]"
DATE_PATTERN = f"^{_YEAR}-{_MONTH_DAY}$"
"""A calendar date ``YYYY-MM-DD`` from MIN_YEAR to MAX_YEAR (with ``format: date``)."""
DATE_TIME_PATTERN = f"^{_YEAR}-{_MONTH_DAY}T{_HH_MM}:[0-5][0-9]([.][0-9]{{1,6}})?(Z|[+-]{_HH_MM})$"
"""RFC 3339 with a UTC offset, from MIN_YEAR to MAX_YEAR (with ``format: date-time``)."""
HH_MM_PATTERN = f"^{_HH_MM}$"
# what str.isspace() (so str.strip()) calls white space, spelled out: \s differs by engine
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = r"^[^\x00]*$"
"""Any text but NUL (no database stores it)."""
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{_SPACE}][^\x00]*$"
"""Text with something besides white space (which the server trims), and no NUL."""


def _e164(value: str) -> str:
    if not is_e164(value):
        raise ValueError("must be a valid phone number in E.164 form, like +15551234567")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone, like America/New_York") from exc
    return value


def _date_time_text(value: object) -> object:
    """Only the text the document describes: no epoch numbers, no other spellings."""
    if not isinstance(value, str) or not re.fullmatch(DATE_TIME_PATTERN, value):
        raise ValueError(
            "must be a date and time with a UTC offset, like 2026-03-02T15:00:00Z,"
            f" between the years {MIN_YEAR} and {MAX_YEAR}"
        )
    return value


def _hh_mm(value: object) -> object:
    if not isinstance(value, str) or not re.fullmatch(HH_MM_PATTERN, value):
        raise ValueError("must be a local time as HH:MM, like 21:00")
    return value


BIRTH_DATE_PATTERN = r"^(19[0-9]{2}|20[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


def _birth_date(value: object) -> object:
    """A date of birth as ``YYYY-MM-DD`` text, from 1900 to today."""
    if not isinstance(value, str) or not re.fullmatch(BIRTH_DATE_PATTERN, value):
        raise ValueError("expected a date like 1984-07-21")
    born = date.fromisoformat(value)
    if born > date.today():
        raise ValueError("a date of birth cannot be in the future")
    return born


def _not_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


def _trimmed(value: str) -> str:
    return value.strip()


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a UTC offset, like 2026-03-02T15:00:00Z")
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


Phone = Annotated[
    str,
    AfterValidator(_e164),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\+[1-9][0-9]{1,14}$",
            "description": "E.164, like +15551234567; 422 if no such number can exist",
        }
    ),
]
TimeZoneName = Annotated[
    str,
    StringConstraints(max_length=64),
    AfterValidator(_zone),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$",
            "description": "an IANA time zone, like America/New_York; 422 if there is none"
            " of that name",
        }
    ),
]
AwareDateTime = Annotated[
    datetime,
    BeforeValidator(_date_time_text),
    AfterValidator(_aware),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}),
]
LocalTime = Annotated[
    time,
    BeforeValidator(_hh_mm),
    WithJsonSchema(
        {"type": "string", "pattern": HH_MM_PATTERN, "description": "local time, HH:MM"}
    ),
]
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=64)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]
# free text: the lengths count what was sent, then the ends are trimmed
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=80),
    AfterValidator(_not_blank),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 80, "pattern": NOT_BLANK_PATTERN}
    ),
]
LastName = Annotated[
    str,
    StringConstraints(max_length=80),
    AfterValidator(_trimmed),
    WithJsonSchema({"type": "string", "maxLength": 80, "pattern": TEXT_PATTERN}),
]
BirthDate = Annotated[
    date,
    BeforeValidator(_birth_date),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": BIRTH_DATE_PATTERN,
            "description": "YYYY-MM-DD, from 1900 to today",
        }
    ),
]
ExternalRef = Annotated[
    str,
    StringConstraints(min_length=1, max_length=120),
    AfterValidator(_not_blank),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 120, "pattern": NOT_BLANK_PATTERN}
    ),
]
TreatmentKind = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_not_blank),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 64, "pattern": NOT_BLANK_PATTERN}
    ),
]
Note = Annotated[
    str,
    StringConstraints(max_length=4000),
    AfterValidator(_trimmed),
    WithJsonSchema({"type": "string", "maxLength": 4000, "pattern": TEXT_PATTERN}),
]
Answer = Annotated[
    str,
    StringConstraints(max_length=1600),
    AfterValidator(_trimmed),
    WithJsonSchema({"type": "string", "maxLength": 1600, "pattern": TEXT_PATTERN}),
]


class _In(BaseModel):
    """Values as sent: a pattern or a time zone does not match padded text (the document's
    patterns say so); only free text is trimmed, after its length is checked."""

    model_config = ConfigDict(extra="forbid")


class QuietHoursIn(_In):
    start: LocalTime
    end: LocalTime


class PatientCreate(_In):
    first_name: Name
    last_name: LastName = ""
    date_of_birth: BirthDate | None = None
    phone: Phone
    timezone: TimeZoneName
    language: Language = "en"
    external_ref: ExternalRef | None = None
    quiet_hours: QuietHoursIn | None = Field(
        default_factory=lambda: QuietHoursIn(start="21:00", end="08:00"),
        description="omitted: 21:00-08:00 local; null: none",
    )


class PatientUpdate(_In):
    first_name: Name | None = None
    last_name: LastName | None = None
    date_of_birth: BirthDate | None = None
    phone: Phone | None = None
    timezone: TimeZoneName | None = None
    language: Language | None = None
    external_ref: ExternalRef | None = None
    quiet_hours: QuietHoursIn | None = None
    status: PatientStatus | None = None


class CheckinCreate(_In):
    flow: Key
    due_at: AwareDateTime | None = None


class TreatmentCreate(_In):
    kind: TreatmentKind
    administered_at: AwareDateTime


class EnrollmentCreate(_In):
    protocol: Key
    start_at: AwareDateTime | None = None


class Resolve(_In):
    disposition: Disposition
    note: Note = ""


class Assign(_In):
    user_id: Annotated[int, Field(ge=1, le=MAX_ID)]


class PatientText(_In):
    body: Annotated[
        str,
        StringConstraints(max_length=1600),
        AfterValidator(_not_blank),
        AfterValidator(_trimmed),
        WithJsonSchema(
            {
                "type": "string",
                "maxLength": 1600,
                "pattern": NOT_BLANK_PATTERN,
                "description": "the text to send, as the clinician wrote it",
            }
        ),
    ]


class Simulate(_In):
    answers: list[Answer] = Field(max_length=200)
    version: Annotated[
        Literal["draft"] | int | None,
        WithJsonSchema(
            {
                "anyOf": [
                    {"const": "draft"},
                    {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                    {"type": "null"},
                ]
            }
        ),
    ] = None
    language: Language = "en"

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: object) -> object:
        """``draft``, null or a whole number in range (``2.0`` is one; ``true`` and ``"2"``
        are not)."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is None or value == "draft":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_VERSION:
            return value
        raise ValueError("must be 'draft' or a version number from 1")


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate ``data``; a failure is a 422 listing each field and what is wrong with it."""
    bad = _nul_path(data)
    if bad is not None:
        raise ApiError(
            422,
            "invalid",
            f"{bad}: must not contain NUL characters",
            [{"field": bad, "message": "must not contain NUL characters"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "body",
                "message": _message(err["msg"]),
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        first = details[0]
        raise ApiError(422, "invalid", f"{first['field']}: {first['message']}", details) from exc


def _nul_path(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a NUL character (no database stores those)."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_path(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")
