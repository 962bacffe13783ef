"""The whole domain as typed SQLAlchemy models.

Every time is timezone-aware UTC. Every status is a ``StrEnum`` stored as a
short string with a CHECK constraint, so SQLite and PostgreSQL hold the same
values. Indexes are named for the hot queries they serve.
"""

from __future__ import annotations

from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    and_,
    bindparam,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from db.enums import (
    CheckinStatus,
    Direction,
    Disposition,
    EnrollmentStatus,
    EscalationStatus,
    MessageStatus,
    PatientStatus,
    Role,
    Severity,
    VersionStatus,
)
from db.types import JSONType, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


_now = text("CURRENT_TIMESTAMP")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    password_hash: Mapped[str] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(20))
    on_call: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # sign-in failures before this are forgiven (an admin's unlock)
    unlocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """Server-side login session; the cookie holds a random ID whose hash is the key."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    idle_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    absolute_expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_address: Mapped[str] = mapped_column(String(64), default="")


class LoginAttempt(Base):
    """Recent login attempts, for rate limiting per account and per address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email_at", "email", "at"),
        Index("ix_login_attempts_source_at", "source_address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    source_address: Mapped[str] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(80))
    last_name: Mapped[str] = mapped_column(String(80), default="", server_default="")
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    phone: Mapped[str] = mapped_column(String(20), unique=True)
    timezone: Mapped[str] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8), default="en")
    quiet_start: Mapped[time | None] = mapped_column(Time)
    quiet_end: Mapped[time | None] = mapped_column(Time)
    status: Mapped[PatientStatus] = mapped_column(
        _enum(PatientStatus, "patient_status"), default=PatientStatus.ACTIVE
    )
    opted_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unreachable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    external_ref: Mapped[str | None] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)


class _VersionedSource:
    """A YAML definition's versions: drafts have no number; published ones are immutable."""

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200), default="")
    source: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    change_note: Mapped[str | None] = mapped_column(String(500))
    """What the publisher said changed (the editor asks for it; the API may leave it out)."""


class FlowVersion(_VersionedSource, Base):
    """A flow's YAML source. Published versions are immutable; at most one draft per key."""

    __tablename__ = "flow_versions"
    __table_args__ = (
        UniqueConstraint("key", "version"),
        Index(
            "uq_flow_versions_one_draft",
            "key",
            unique=True,
            sqlite_where=text("status = 'draft'"),
            postgresql_where=text("status = 'draft'"),
        ),
    )

    status: Mapped[VersionStatus] = mapped_column(_enum(VersionStatus, "flow_status"))


class ProtocolVersion(_VersionedSource, Base):
    """A protocol's YAML source, versioned like flows."""

    __tablename__ = "protocol_versions"
    __table_args__ = (
        UniqueConstraint("key", "version"),
        Index(
            "uq_protocol_versions_one_draft",
            "key",
            unique=True,
            sqlite_where=text("status = 'draft'"),
            postgresql_where=text("status = 'draft'"),
        ),
    )

    status: Mapped[VersionStatus] = mapped_column(_enum(VersionStatus, "protocol_status"))


class Enrollment(Base):
    __tablename__ = "enrollments"
    __table_args__ = (Index("ix_enrollments_patient_id_status", "patient_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    protocol_key: Mapped[str] = mapped_column(String(64))
    protocol_version: Mapped[int] = mapped_column(Integer)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[EnrollmentStatus] = mapped_column(
        _enum(EnrollmentStatus, "enrollment_status"), default=EnrollmentStatus.ACTIVE
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Treatment(Base):
    __tablename__ = "treatments"
    __table_args__ = (
        Index("ix_treatments_patient_id_administered_at", "patient_id", "administered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    administered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)


class Checkin(Base):
    """One scheduled conversation. ``state`` is the engine's JSON state once started."""

    __tablename__ = "checkins"
    __table_args__ = (
        Index("ix_checkins_status_due_at", "status", "due_at"),
        Index("ix_checkins_patient_id_status", "patient_id", "status"),
        Index("ix_checkins_patient_id_due_at", "patient_id", "due_at"),
        Index("ix_checkins_status_reminder_at", "status", "reminder_at"),
        Index("ix_checkins_status_expires_at", "status", "expires_at"),
        UniqueConstraint("enrollment_id", "treatment_id", "item_index", "occurrence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    flow_key: Mapped[str] = mapped_column(String(64))
    flow_version: Mapped[int | None] = mapped_column(Integer)
    # the pinned version's checksum: lets a process reuse its parsed flow without a lookup
    flow_checksum: Mapped[str | None] = mapped_column(String(64))
    enrollment_id: Mapped[int | None] = mapped_column(
        ForeignKey("enrollments.id", ondelete="SET NULL")
    )
    treatment_id: Mapped[int | None] = mapped_column(
        ForeignKey("treatments.id", ondelete="SET NULL")
    )
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"))
    item_index: Mapped[int | None] = mapped_column(Integer)
    occurrence: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[CheckinStatus] = mapped_column(
        _enum(CheckinStatus, "checkin_status"), default=CheckinStatus.SCHEDULED
    )
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reminder_after_s: Mapped[int | None] = mapped_column(Integer)
    expiry_after_s: Mapped[int | None] = mapped_column(Integer)
    reminder_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reminder_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # bumped by every step write; a step computed from an older revision writes nothing
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    outcome: Mapped[str | None] = mapped_column(String(24))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=_now)


class Message(Base):
    """Every SMS in or out. Outbound rows are the outbox: written first, sent after commit."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_patient_id_created_at", "patient_id", "created_at"),
        # the outbox: few rows are unsent at any time, so its claims stay cheap at any size
        Index(
            "ix_messages_outbox",
            "id",
            sqlite_where=text("status IN ('pending', 'sending')"),
            postgresql_where=text("status IN ('pending', 'sending')"),
        ),
        Index("ix_messages_checkin_id", "checkin_id"),
        Index("ix_messages_escalation_id", "escalation_id"),
        # the texts of unknown senders, who have no patient; a patient's go by patient_id
        Index(
            "ix_messages_phone_unlinked",
            "phone",
            sqlite_where=text("patient_id IS NULL"),
            postgresql_where=text("patient_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"))
    # an on-call page: the escalation it is about (escalations point back at the text that
    # raised them, so this key is created after both tables)
    escalation_id: Mapped[int | None] = mapped_column(
        ForeignKey("escalations.id", ondelete="SET NULL", use_alter=True)
    )
    direction: Mapped[Direction] = mapped_column(_enum(Direction, "direction"))
    phone: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(24), default="")
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus, "message_status"))
    error_code: Mapped[int | None] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(SmallInteger, default=1)
    encoding: Mapped[str] = mapped_column(String(8), default="GSM-7")
    send_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class EarlyStatus(Base):
    """A delivery report that came before its send was recorded.

    Twilio may call back in the moment between accepting a message and our commit of its
    sid; the report is kept here, not dropped, and the worker applies it once a message
    has that sid. No PHI: a sid, a status and an error code.
    """

    __tablename__ = "early_statuses"
    __table_args__ = (Index("ix_early_statuses_provider_sid", "provider_sid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_sid: Mapped[str] = mapped_column(String(64))
    status: Mapped[MessageStatus] = mapped_column(_enum(MessageStatus, "message_status"))
    error_code: Mapped[int | None] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


def of_sender(patient_id: int | None, phone: str) -> ColumnElement[bool]:
    """The messages of one conversation partner: a patient's by patient_id, an unknown
    sender's by number among the texts with no patient (``ix_messages_phone_unlinked``).
    The number alone is not indexed: a phone index written for every reply cost
    PostgreSQL work on each one, for lookups that know the patient anyway."""
    if patient_id is not None:
        return Message.patient_id == patient_id
    return and_(Message.patient_id.is_(None), Message.phone == phone)


def unsent() -> ColumnElement[bool]:
    """The predicate of ``ix_messages_outbox``, its statuses written into the SQL, not bound:
    a bound list hides it from SQLite's planner always and from PostgreSQL's generic plans,
    and a claim then scans every message ever sent."""
    return Message.status.in_(
        bindparam(
            "unsent",
            [MessageStatus.PENDING, MessageStatus.SENDING],
            expanding=True,
            literal_execute=True,
        )
    )


class Answer(Base):
    __tablename__ = "answers"
    __table_args__ = (Index("ix_answers_checkin_id", "checkin_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    checkin_id: Mapped[int] = mapped_column(ForeignKey("checkins.id", ondelete="CASCADE"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    question_key: Mapped[str] = mapped_column(String(64))
    raw_text: Mapped[str | None] = mapped_column(Text)
    value: Mapped[Any] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (
        Index(
            "ix_scores_patient_id_instrument_created_at", "patient_id", "instrument", "created_at"
        ),
        Index("ix_scores_checkin_id", "checkin_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    checkin_id: Mapped[int] = mapped_column(ForeignKey("checkins.id", ondelete="CASCADE"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    instrument: Mapped[str] = mapped_column(String(64))
    total: Mapped[float] = mapped_column(Float)
    band: Mapped[str | None] = mapped_column(String(64))
    flags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    complete: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Escalation(Base):
    __tablename__ = "escalations"
    __table_args__ = (
        Index("ix_escalations_queue", "status", "severity_rank", "created_at"),
        # the queue as clinicians poll it: open and claimed, in queue order; a few hundred
        # rows while the table grows by the hundred thousand
        Index(
            "ix_escalations_open_queue",
            "severity_rank",
            "created_at",
            "id",
            sqlite_where=text("status IN ('open', 'claimed')"),
            postgresql_where=text("status IN ('open', 'claimed')"),
        ),
        Index("ix_escalations_patient_id_created_at", "patient_id", "created_at"),
        Index("ix_escalations_status_sla_due_at", "status", "sla_due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    checkin_id: Mapped[int | None] = mapped_column(ForeignKey("checkins.id", ondelete="SET NULL"))
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    severity: Mapped[Severity] = mapped_column(_enum(Severity, "severity"))
    severity_rank: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(String(64))
    summary: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[EscalationStatus] = mapped_column(
        _enum(EscalationStatus, "escalation_status"), default=EscalationStatus.OPEN
    )
    sla_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disposition: Mapped[Disposition | None] = mapped_column(_enum(Disposition, "disposition"))
    note: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int] = mapped_column(Integer, default=0)
    last_paged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """Append-only record of who did what to which subject, from where."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_subject", "subject_type", "subject_id"),
        Index("ix_audit_events_actor_id_at", "actor_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32), default="")
    subject_id: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    source_address: Mapped[str] = mapped_column(String(64), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
