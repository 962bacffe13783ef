"""Statuses and kinds stored in the database, as ``StrEnum``s."""

from __future__ import annotations

from enum import StrEnum

from flows.model import Severity as Severity


class Role(StrEnum):
    CLINICIAN = "clinician"
    ADMIN = "admin"


class PatientStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    DISCHARGED = "discharged"


class VersionStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    RETIRED = "retired"


class EnrollmentStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class CheckinStatus(StrEnum):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    COMPLETED = "completed"
    MISSED = "missed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


OPEN_CHECKIN_STATUSES = (CheckinStatus.SCHEDULED, CheckinStatus.ACTIVE)


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class MessageStatus(StrEnum):
    """Outbound statuses follow Twilio's; ``pending`` is ours (in the outbox, not yet sent)."""

    PENDING = "pending"
    SENDING = "sending"
    ACCEPTED = "accepted"
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RECEIVED = "received"


SEVERITY_RANK = {
    Severity.CRITICAL: 0,
    Severity.HIGH: 1,
    Severity.MODERATE: 2,
    Severity.LOW: 3,
}
"""0 for the most severe: the queue sorts on it."""


class EscalationStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    RESOLVED = "resolved"


class Disposition(StrEnum):
    REACHED_PATIENT = "reached_patient"
    LEFT_MESSAGE = "left_message"
    SENT_TO_EMERGENCY_CARE = "sent_to_emergency_care"
    NO_ACTION_NEEDED = "no_action_needed"
    OTHER = "other"
