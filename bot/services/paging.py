"""On-call paging: critical escalations page at once, high ones after
``PAGE_HIGH_AFTER_MINUTES`` unclaimed, and unclaimed ones page again after their SLA.

Pages go through the outbox like any SMS and carry no PHI: only the alert
number and where to look. A claimed or resolved escalation is never paged.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from bot.services.escalations import PAGE_AT_ONCE, SLA
from bot.services.outbox import enqueue
from bot.settings import Settings
from db.enums import EscalationStatus, Role, Severity
from db.models import Escalation, User
from db.session import Database

log = logging.getLogger(__name__)

PAGED_SEVERITIES = (Severity.CRITICAL, Severity.HIGH)


def page_text(settings: Settings, escalation: Escalation) -> str:
    label = "Critical" if escalation.severity is Severity.CRITICAL else "High"
    again = "" if escalation.page_count == 0 else f" (unclaimed, page {escalation.page_count + 1})"
    clinic = f"{settings.clinic_name}: " if settings.clinic_name else ""
    return (
        f"{clinic}{label} alert #{escalation.id}{again} - open the queue: "
        f"{settings.public_base_url}/escalations/{escalation.id}"
    )


async def _recipients(session: AsyncSession, *, with_admins: bool) -> list[User]:
    query = select(User).where(User.active.is_(True), User.phone.is_not(None))
    who: ColumnElement[bool] = User.on_call.is_(True)
    if with_admins:
        who = or_(who, User.role == Role.ADMIN)
    return list((await session.scalars(query.where(who).order_by(User.id))).all())


async def page_due(
    db: Database, settings: Settings, now: datetime, *, limit: int = 100
) -> tuple[int, list[int]]:
    """Page what is due; return (escalations paged, outbound message ids)."""
    high_after = timedelta(minutes=settings.page_high_after_minutes)
    async with db.write() as session:
        query = (
            select(Escalation)
            .where(
                Escalation.status == EscalationStatus.OPEN,
                Escalation.severity.in_(PAGED_SEVERITIES),
                or_(
                    and_(
                        Escalation.severity.in_(PAGE_AT_ONCE),
                        Escalation.page_count == 0,
                        Escalation.last_paged_at.is_(None),
                    ),
                    # a high one pages once it has waited PAGE_HIGH_AFTER_MINUTES unclaimed
                    and_(
                        Escalation.severity == Severity.HIGH,
                        Escalation.page_count == 0,
                        Escalation.last_paged_at.is_(None),
                        Escalation.created_at <= now - high_after,
                    ),
                    Escalation.sla_due_at <= now,
                ),
            )
            .order_by(Escalation.severity_rank, Escalation.created_at)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        due = list((await session.scalars(query)).all())
        if not due:
            return 0, []
        on_call = await _recipients(session, with_admins=False)
        everyone = await _recipients(session, with_admins=True)
        messages = []
        paged = 0
        for escalation in due:
            first = escalation.page_count == 0  # the on-call first; later pages reach admins too
            recipients = on_call if first and on_call else everyone
            if not recipients:
                # Nobody was paged, so nothing is counted; try again when the SLA next passes.
                log.error(
                    "escalation %s is due a page but no active user has a phone", escalation.id
                )
                escalation.last_paged_at = now
                escalation.sla_due_at = now + SLA[escalation.severity]
                continue
            body = page_text(settings, escalation)
            for user in recipients:
                assert user.phone is not None
                messages.append(
                    enqueue(
                        session=session,
                        phone=user.phone,
                        body=body,
                        purpose="page",
                        now=now,
                        user_id=user.id,
                        escalation_id=escalation.id,
                    )
                )
            paged += 1
            escalation.page_count += 1
            escalation.last_paged_at = now
            escalation.sla_due_at = now + SLA[escalation.severity]
        await session.flush()
        ids = [m.id for m in messages]
    log.info("paged %d escalations (%d messages)", paged, len(ids))
    return paged, ids
