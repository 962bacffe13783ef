"""The demo phone (``aftercare demo`` only): text as a patient, see the bot's replies.

A text typed here takes the same road as one from Twilio: the handler builds Twilio's form,
signs it with the configured auth token over ``PUBLIC_BASE_URL + "/twilio/sms"`` exactly as
Twilio would, and posts it to this server's own ``/twilio/sms`` over loopback, where the
signature is really checked. Nothing here writes a message row itself.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

import aiohttp
import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import or_, select

from bot import background
from bot.appkeys import CLOCK, DATABASE, SETTINGS, TRANSPORT
from bot.services import outbox, scheduling
from bot.services.conversations import start_checkin
from bot.services.flow_store import FlowUnavailableError
from bot.services.sessions import SessionUser
from bot.settings import Settings, is_e164
from bot.sms import signature
from bot.web import audit_log
from bot.web.pages import notices
from bot.web.pages.common import current_user, form_with_csrf, record, render, require_user
from db.enums import CheckinStatus, Direction, EscalationStatus, PatientStatus, VersionStatus
from db.models import Checkin, Escalation, FlowVersion, Message, Patient, of_sender

PATH = "/demo/phone"
DEMO_ACCOUNT_SID = "AC" + "demo".ljust(32, "0")
MAX_BODY = 1600
SHOWN = 200
LOOPBACK_TIMEOUT_S = 15.0
DEFAULT_FLOW = "phq9"


def loopback_base(settings: Settings) -> str:
    """This server, reached from itself: the address it listens on, or 127.0.0.1."""
    host = settings.host.strip()
    if host in ("", "0.0.0.0", "localhost"):  # noqa: S104 - an address to call, not to bind
        host = "127.0.0.1"
    elif host == "::":
        host = "[::1]"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def twilio_form(settings: Settings, phone: str, body: str) -> dict[str, str]:
    """What Twilio posts for an incoming text; a fresh ``SMdemo…`` MessageSid each time."""
    return {
        "MessageSid": "SMdemo" + uuid.uuid4().hex,
        "AccountSid": settings.twilio_account_sid or DEMO_ACCOUNT_SID,
        "From": phone,
        "To": settings.twilio_from_number or settings.clinic_phone or "",
        "Body": body,
        "NumMedia": "0",
    }


async def deliver(settings: Settings, params: dict[str, str]) -> int:
    """Post the form to our own ``/twilio/sms`` as Twilio would; returns the HTTP status."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if settings.twilio_auth_token:
        headers["X-Twilio-Signature"] = signature.sign(
            auth_token=settings.twilio_auth_token,
            url=signature.public_url(settings.public_base_url, "/twilio/sms"),
            params=params,
        )
    timeout = aiohttp.ClientTimeout(total=LOOPBACK_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(
            loopback_base(settings) + "/twilio/sms",
            data=urlencode(params),
            headers=headers,
            allow_redirects=False,
        ) as resp,
    ):
        await resp.read()
        return resp.status


def _here(phone: str = "", **extra: str) -> str:
    """This page for ``phone``, with a notice or error code (``bot.web.pages.notices``)."""
    assert all(v in notices.NOTICES or v in notices.ERRORS for v in extra.values() if v)
    query = {k: v for k, v in {"phone": phone, **extra}.items() if v}
    return PATH + ("?" + urlencode(query) if query else "")


def _chosen(request: web.Request) -> str:
    """The number to act as: a typed one wins over the list; '' when none or not E.164."""
    typed = request.query.get("number", "").strip().replace(" ", "").replace("-", "")
    raw = typed or request.query.get("phone", "").strip()
    if raw[:1].isascii() and raw[:1].isdigit():
        raw = "+" + raw  # typed without the +, or a + left unencoded in a URL (a space)
    return raw if len(raw) <= 20 and is_e164(raw) else ""


async def _conversation(
    request: web.Request, phone: str
) -> tuple[int | None, list[dict[str, Any]]]:
    """The number's patient (``None`` for an unknown sender) and its latest texts."""
    async with request.app[DATABASE].read() as session:
        patient_id = await session.scalar(select(Patient.id).where(Patient.phone == phone))
        # the patient's texts, and any this number sent before it was a patient's
        unlinked = of_sender(None, phone)
        rows = (
            await session.scalars(
                select(Message)
                .where(
                    unlinked if patient_id is None else or_(of_sender(patient_id, phone), unlinked)
                )
                .order_by(Message.created_at.desc(), Message.id.desc())
                .limit(SHOWN)
            )
        ).all()
    return patient_id, [
        {
            "mine": m.direction is Direction.IN,
            "body": m.body,
            "at": m.created_at,
            "status": "" if m.direction is Direction.IN else str(m.status),
            "purpose": m.purpose,
        }
        for m in reversed(rows)
    ]


def _conversation_html(request: web.Request, context: dict[str, Any]) -> str:
    """The page's ``conversation`` block alone, for the refresh script."""
    env = aiohttp_jinja2.get_env(request.app)
    template = env.get_template("demo_phone.html")
    ctx = template.new_context(context)
    return "".join(template.blocks["conversation"](ctx))


async def _audit_view(
    request: web.Request,
    user: SessionUser,
    phone: str,
    patient_id: int | None,
    messages: int,
    **details: object,
) -> None:
    """``demo.phone.view``: the patient whose texts are shown (an unknown sender's number
    masked in the details), and how many."""
    if phone:
        details["messages"] = messages
        if patient_id is None:
            details["phone"] = audit_log.masked_query(phone)
    subject = "" if patient_id is None else patient_id
    await audit_log.write(request, user, "demo.phone.view", "patient", subject, details)


async def phone_page(request: web.Request) -> web.Response:
    """Audited ``demo.phone.view`` (it lists the patients and shows a transcript)."""
    user = require_user(request)
    phone = _chosen(request)
    typed = request.query.get("number", "") or request.query.get("phone", "")
    async with request.app[DATABASE].read() as session:
        patients = list(
            (await session.scalars(select(Patient).order_by(Patient.id).limit(100))).all()
        )
        flows = sorted(
            set(
                (
                    await session.scalars(
                        select(FlowVersion.key).where(FlowVersion.status == VersionStatus.PUBLISHED)
                    )
                ).all()
            )
        )
        patient = next((p for p in patients if p.phone == phone), None)
        active = None
        open_escalations: list[Escalation] = []
        if patient is not None:
            active = await session.scalar(
                select(Checkin)
                .where(Checkin.patient_id == patient.id, Checkin.status == CheckinStatus.ACTIVE)
                .order_by(Checkin.started_at.desc())
                .limit(1)
            )
            open_escalations = list(
                (
                    await session.scalars(
                        select(Escalation)
                        .where(
                            Escalation.patient_id == patient.id,
                            Escalation.status != EscalationStatus.RESOLVED,
                        )
                        .order_by(Escalation.severity_rank, Escalation.created_at)
                    )
                ).all()
            )
    patient_id, messages = await _conversation(request, phone) if phone else (None, [])
    await _audit_view(request, user, phone, patient_id, len(messages), patients=len(patients))
    return render(
        request,
        "demo_phone.html",
        {
            "patients": patients,
            "phone": phone,
            "typed": typed if typed and not phone else "",
            "patient": patient,
            "active": active,
            "open_escalations": open_escalations,
            "flows": flows,
            "default_flow": DEFAULT_FLOW if DEFAULT_FLOW in flows else "",
            "messages": messages,
            "refresh": _here(phone).replace(PATH, PATH + "/messages", 1) if phone else "",
        },
    )


async def messages_fragment(request: web.Request) -> web.Response:
    """The conversation alone (HTML), polled by the page every 2 s; audited as the page is."""
    user = current_user(request)
    if user is None:
        raise web.HTTPUnauthorized(text="Sign in again.")
    phone = _chosen(request)
    if not phone:
        raise web.HTTPNotFound(text="Choose a phone number.")
    patient_id, messages = await _conversation(request, phone)
    await _audit_view(request, user, phone, patient_id, len(messages), refresh=True)
    html = _conversation_html(request, {"messages": messages})
    return web.Response(text=html, content_type="text/html")


async def send_text(request: web.Request) -> web.Response:
    """The visitor's text, through Twilio's webhook path, then back to the phone."""
    user = require_user(request)
    form = await form_with_csrf(request, user)
    phone = form.get("phone", "").strip()
    body = form.get("body", "").strip()
    if not is_e164(phone):
        raise web.HTTPSeeOther(_here(error="demo_no_number"))
    if not body:
        raise web.HTTPSeeOther(_here(phone, error="demo_empty"))
    if len(body) > MAX_BODY:
        raise web.HTTPSeeOther(_here(phone, error="demo_too_long"))
    settings = request.app[SETTINGS]
    try:
        status = await deliver(settings, twilio_form(settings, phone, body))
    except (aiohttp.ClientError, TimeoutError):
        raise web.HTTPSeeOther(_here(phone, error="demo_unreachable")) from None
    if status != 200:
        raise web.HTTPSeeOther(_here(phone, error="demo_refused"))
    async with request.app[DATABASE].write() as session:
        patient_id = await session.scalar(select(Patient.id).where(Patient.phone == phone))
        record(
            request,
            session,
            user,
            "demo.phone.text",
            "patient" if patient_id else "",
            patient_id or "",
        )
    raise web.HTTPSeeOther(_here(phone))


async def start_now(request: web.Request) -> web.Response:
    """Send a check-in to the chosen patient now (quiet hours skipped: this is a demo).

    An ad-hoc check-in from the scheduling service, started at once; when a conversation is
    already running it waits behind it, as any due check-in does.
    """
    user = require_user(request)
    form = await form_with_csrf(request, user)
    phone = form.get("phone", "").strip()
    flow = form.get("flow", "").strip() or DEFAULT_FLOW
    app = request.app
    now = app[CLOCK].now()
    async with app[DATABASE].write() as session:
        patient = await session.scalar(
            select(Patient).where(Patient.phone == phone).with_for_update()
        )
        if patient is None:
            raise web.HTTPSeeOther(_here(phone, error="demo_unknown"))
        if patient.status is not PatientStatus.ACTIVE or patient.opted_out_at is not None:
            raise web.HTTPSeeOther(_here(phone, error="inactive"))
        try:
            checkin = await scheduling.adhoc_checkin(
                session=session, patient=patient, flow_key=flow, due_at=now, now=now
            )
        except (ValueError, FlowUnavailableError):
            raise web.HTTPSeeOther(_here(phone, error="demo_no_flow")) from None
        checkin.due_at = now  # the demo does not wait for the patient's quiet hours to end
        busy = await session.scalar(
            select(Checkin.id)
            .where(Checkin.patient_id == patient.id, Checkin.status == CheckinStatus.ACTIVE)
            .limit(1)
        )
        ids: list[int] = []
        if busy is None:
            applied = await start_checkin(
                session=session, checkin=checkin, patient=patient, settings=app[SETTINGS], now=now
            )
            await session.flush()
            ids = applied.ids
        record(request, session, user, "demo.phone.checkin", "patient", patient.id, flow=flow)
    if ids:
        background.spawn(app, _send(app, ids))
        notice = "demo_started"
    else:
        notice = "demo_queued"
    raise web.HTTPSeeOther(_here(phone, notice=notice))


async def _send(app: web.Application, ids: list[int]) -> None:
    await outbox.send(app[DATABASE], app[TRANSPORT], app[CLOCK], ids=ids)


def setup(app: web.Application) -> None:
    """Registered in demo mode only: elsewhere ``/demo/phone`` is a plain 404."""
    if not app[SETTINGS].demo:
        return
    app.router.add_get(PATH, phone_page)
    app.router.add_get(PATH + "/messages", messages_fragment)
    app.router.add_post(PATH + "/send", send_text)
    app.router.add_post(PATH + "/checkin", start_now)
