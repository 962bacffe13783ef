"""Request bodies of the API, validated with pydantic (422 names the field)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from bot.settings import is_e164
from bot.web.api.errors import ApiError
from db.enums import Disposition, PatientStatus

KEY_PATTERN = r"^[a-z][a-z0-9_]*$"
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_VERSION = 2**31 - 1


def _e164(value: str) -> str:
    value = value.strip()
    if not is_e164(value):
        raise ValueError("must be a valid phone number in E.164 form, like +15551234567")
    return value


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("must be an IANA time zone, like America/New_York") from exc
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a UTC offset, like 2026-03-02T15:00:00Z")
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")
    return value


Phone = Annotated[str, AfterValidator(_e164)]
TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]
AwareDateTime = Annotated[datetime, AfterValidator(_aware)]
Key = Annotated[str, StringConstraints(pattern=KEY_PATTERN, max_length=64)]
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class QuietHoursIn(_In):
    start: time = Field(description="local time, HH:MM")
    end: time = Field(description="local time, HH:MM")


class PatientCreate(_In):
    first_name: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    phone: Phone
    timezone: TimeZoneName
    language: Language = "en"
    external_ref: Annotated[str, StringConstraints(min_length=1, max_length=120)] | None = None
    quiet_hours: QuietHoursIn | None = Field(
        default_factory=lambda: QuietHoursIn(start=time(21, 0), end=time(8, 0)),
        description="omitted: 21:00-08:00 local; null: none",
    )


class PatientUpdate(_In):
    first_name: Annotated[str, StringConstraints(min_length=1, max_length=80)] | None = None
    phone: Phone | None = None
    timezone: TimeZoneName | None = None
    language: Language | None = None
    external_ref: Annotated[str, StringConstraints(min_length=1, max_length=120)] | None = None
    quiet_hours: QuietHoursIn | None = None
    status: PatientStatus | None = None


class CheckinCreate(_In):
    flow: Key
    due_at: AwareDateTime | None = None


class TreatmentCreate(_In):
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    administered_at: AwareDateTime


class EnrollmentCreate(_In):
    protocol: Key
    start_at: AwareDateTime | None = None


class Resolve(_In):
    disposition: Disposition
    note: Annotated[str, StringConstraints(max_length=4000)] = ""


class Simulate(_In):
    answers: list[Annotated[str, StringConstraints(max_length=1600)]] = Field(max_length=200)
    version: Literal["draft"] | int | None = None
    language: Language = "en"

    @field_validator("version")
    @classmethod
    def _positive(cls, value: Literal["draft"] | int | None) -> Literal["draft"] | int | None:
        if isinstance(value, int) and not 1 <= value <= MAX_VERSION:
            raise ValueError("must be 'draft' or a version number from 1")
        return value


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
