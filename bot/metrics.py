"""Prometheus metrics, one registry per app (no module-level state).

The ``/metrics`` view lives in ``bot.web.metrics_view``.

Counters and histograms move with traffic in the process that did the work
(scrape every web and worker process); gauges about the database (check-ins
by status, the due backlog, open escalations) are read at scrape time, so any
process reports the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import func, select

from db.enums import CheckinStatus, Direction, EscalationStatus, Severity
from db.models import Checkin, Escalation, Message, unsent
from db.session import Database


@dataclass
class SendStats:
    """What one outbox pass did, for the counters."""

    accepted: int = 0
    retried: int = 0
    failed: int = 0
    by_purpose: dict[str, int] = field(default_factory=dict)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.inbound = Counter(
            "aftercare_inbound_messages_total",
            "Inbound SMS by how they were routed",
            ["route"],
            registry=r,
        )
        self.outbound = Counter(
            "aftercare_outbound_messages_total",
            "Outbound SMS send attempts by result",
            ["result"],
            registry=r,
        )
        self.outbox_retries = Counter(
            "aftercare_outbox_retries_total",
            "Transient send failures scheduled for a retry",
            registry=r,
        )
        self.pages = Counter("aftercare_pages_sent_total", "On-call pages queued", registry=r)
        self.status_callbacks = Counter(
            "aftercare_status_callbacks_total", "Delivery status callbacks", ["status"], registry=r
        )
        self.webhook_latency = Histogram(
            "aftercare_webhook_seconds",
            "Time to answer a Twilio webhook",
            ["endpoint"],
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        # bound once for the webhook: ``labels()`` takes a lock and a lookup on every call
        self.sms_latency = self.webhook_latency.labels("sms")
        self._inbound_routes: dict[str, Any] = {}
        self.tick_seconds = Histogram(
            "aftercare_worker_tick_seconds",
            "Duration of worker ticks",
            ["tick"],
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0),
            registry=r,
        )
        self.checkins = Gauge("aftercare_checkins", "Check-ins by status", ["status"], registry=r)
        self.backlog = Gauge("aftercare_due_backlog", "Check-ins due but not started", registry=r)
        self.backlog_age = Gauge(
            "aftercare_due_backlog_oldest_seconds",
            "Age of the oldest due, unstarted check-in",
            registry=r,
        )
        self.outbox_pending = Gauge(
            "aftercare_outbox_pending",
            "Outbound messages not yet accepted by the provider",
            registry=r,
        )
        self.open_escalations = Gauge(
            "aftercare_open_escalations", "Open or claimed escalations", ["severity"], registry=r
        )
        self.oldest_escalation = Gauge(
            "aftercare_open_escalation_oldest_seconds",
            "Age of the oldest open escalation",
            ["severity"],
            registry=r,
        )

    def inbound_routed(self, route: str) -> None:
        child = self._inbound_routes.get(route)
        if child is None:
            child = self._inbound_routes[route] = self.inbound.labels(route)
        child.inc()

    def record_send(self, stats: SendStats) -> None:
        if stats.accepted:
            self.outbound.labels("accepted").inc(stats.accepted)
        if stats.retried:
            self.outbound.labels("retry").inc(stats.retried)
            self.outbox_retries.inc(stats.retried)
        if stats.failed:
            self.outbound.labels("failed").inc(stats.failed)

    async def refresh(self, db: Database, now: datetime) -> None:
        async with db.read() as session:
            counts = {
                status: n
                for status, n in (
                    await session.execute(
                        select(Checkin.status, func.count()).group_by(Checkin.status)
                    )
                ).all()
            }
            for status in CheckinStatus:
                self.checkins.labels(str(status)).set(counts.get(status, 0))
            due = (
                await session.execute(
                    select(func.count(), func.min(Checkin.due_at)).where(
                        Checkin.status == CheckinStatus.SCHEDULED, Checkin.due_at <= now
                    )
                )
            ).one()
            self.backlog.set(due[0] or 0)
            self.backlog_age.set((now - _aware(due[1])).total_seconds() if due[1] else 0)
            pending = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(
                    Message.direction == Direction.OUT,
                    unsent(),
                )
            )
            self.outbox_pending.set(pending or 0)
            rows = (
                await session.execute(
                    select(Escalation.severity, func.count(), func.min(Escalation.created_at))
                    .where(Escalation.status != EscalationStatus.RESOLVED)
                    .group_by(Escalation.severity)
                )
            ).all()
            seen = {sev: (n, oldest) for sev, n, oldest in rows}
            for sev in Severity:
                n, oldest = seen.get(sev, (0, None))
                self.open_escalations.labels(str(sev)).set(n)
                self.oldest_escalation.labels(str(sev)).set(
                    (now - _aware(oldest)).total_seconds() if oldest else 0
                )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
