"""Twilio webhooks: ``POST /twilio/sms`` and ``POST /twilio/status``.

Signature first, before anything is parsed into the database; then strict
field checks; the reply is an empty TwiML document and the answer goes out
through the outbox after commit.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from multidict import MultiDict
from sqlalchemy.exc import DBAPIError, OperationalError

from bot import background
from bot.appkeys import (
    CLOCK,
    DATABASE,
    METRICS,
    RECORDER,
    REPLY_GROUPS,
    SENDER_LOCKS,
    SETTINGS,
    TRANSPORT,
    TWILIO_VALIDATOR,
)
from bot.logs import mask_phone
from bot.metrics import SendStats
from bot.services import outbox, paging
from bot.services.inbound import InboundSms, handle_inbound
from bot.services.outbox import Claimed
from bot.settings import is_e164
from bot.sms import signature

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 64 * 1024
FORM_TYPE = "application/x-www-form-urlencoded"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_SID = 64


_TWIML_BYTES = TWIML_EMPTY.encode()


def _twiml(status: int = 200) -> web.Response:
    return web.Response(body=_TWIML_BYTES, status=status, content_type="text/xml", charset="utf-8")


def _plain(status: int, message: str) -> web.Response:
    return web.Response(text=message + "\n", status=status, content_type="text/plain")


async def _read_form(request: web.Request) -> MultiDict[str] | web.Response:
    """The verified form fields (a repeated key keeps every value), or the error to send.

    aiohttp reads and parses the body; a clone of the request carries this endpoint's own
    size limit, so a chunked body is refused as soon as it passes it.

    Outside ``aftercare demo`` a webhook is refused when no auth token is set: nothing
    unsigned is ever written (a forged "crisis" text would otherwise create records).
    """
    settings = request.app[SETTINGS]
    if not settings.verify_signatures and not settings.demo:
        return _plain(403, "webhooks are refused: TWILIO_AUTH_TOKEN is not set")
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        return _plain(413, f"request body over {MAX_WEBHOOK_BYTES} bytes")
    form: MultiDict[str] | None = None
    if request.content_type == FORM_TYPE:
        try:
            posted = await request.clone(client_max_size=MAX_WEBHOOK_BYTES).post()
        except web.HTTPRequestEntityTooLarge as exc:  # the size, or too many fields
            return _plain(413, exc.text or f"request body over {MAX_WEBHOOK_BYTES} bytes")
        except (UnicodeDecodeError, LookupError):  # not in its charset, or an unknown charset
            pass
        else:
            # a urlencoded body has only text values; the filter is for the type checker
            form = MultiDict((k, v) for k, v in posted.items() if isinstance(v, str))
    if settings.verify_signatures:
        url = signature.public_url(settings.public_base_url, request.raw_path)
        if form is None or not signature.is_valid(
            request.app[TWILIO_VALIDATOR],
            url=url,
            params=form,
            signature=request.headers.get("X-Twilio-Signature"),
        ):
            log.warning("rejected %s: bad or missing Twilio signature", request.path)
            return _plain(403, "invalid Twilio signature")
    if form is None:
        return _plain(400, f"body must be a UTF-8 form ({FORM_TYPE})")
    if any("\x00" in k or "\x00" in v for k, v in form.items()):
        return _plain(400, "form fields must not contain NUL characters")
    return form


def _unavailable(exc: Exception) -> web.Response:
    log.error("database unavailable while handling a webhook: %s", type(exc).__name__)
    return _plain(503, "temporarily unavailable; Twilio will retry")


async def inbound_sms(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return await _inbound_sms(request)
    finally:
        request.app[METRICS].sms_latency.observe(time.perf_counter() - started)


async def _inbound_sms(request: web.Request) -> web.Response:
    form = await _read_form(request)
    if isinstance(form, web.Response):
        return form
    fields = dict(form.items())  # a repeated key: its last value
    sid = fields.get("MessageSid", "").strip()
    sender = fields.get("From", "").strip()
    if not sid or len(sid) > MAX_SID:
        return _plain(400, "MessageSid is missing or too long")
    if not sender:
        return _plain(400, "From is missing")
    if not is_e164(sender):
        return _plain(400, "From is not a phone number in E.164 form")
    sms = InboundSms(sid=sid, from_=sender, to=fields.get("To", ""), body=fields.get("Body", ""))
    app = request.app
    try:
        # one sender's messages one at a time, in the order this process received them
        async with app[SENDER_LOCKS].hold(sender):
            result = await handle_inbound(
                app[DATABASE], app[SETTINGS], sms, app[CLOCK].now(), app[REPLY_GROUPS]
            )
    except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
        return _unavailable(exc)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "inbound %s from %s: %s", sid[:8] + "…", mask_phone(sender), result.route or "handled"
        )
    app[METRICS].inbound_routed(result.route or "handled")
    if result.claimed or result.page_now:
        background.spawn(app, _after_commit(app, result.claimed, page=result.page_now))
    return _twiml()


async def _after_commit(app: web.Application, claimed: list[Claimed], *, page: bool) -> None:
    """The fast path: replies first, then pages for a new critical escalation.

    Anything not sent here stays in the outbox (and the paging tick) for the worker.
    """
    metrics = app[METRICS]
    stats = SendStats()
    if claimed:
        await outbox.send_claimed(
            app[DATABASE], app[TRANSPORT], app[CLOCK], claimed, stats=stats, recorder=app[RECORDER]
        )
    if page:
        _paged, page_ids = await paging.page_due(app[DATABASE], app[SETTINGS], app[CLOCK].now())
        if page_ids:
            metrics.pages.inc(len(page_ids))
            await outbox.send(app[DATABASE], app[TRANSPORT], app[CLOCK], ids=page_ids, stats=stats)
    metrics.record_send(stats)


async def status_callback(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return await _status_callback(request)
    finally:
        request.app[METRICS].webhook_latency.labels("status").observe(time.perf_counter() - started)


async def _status_callback(request: web.Request) -> web.Response:
    form = await _read_form(request)
    if isinstance(form, web.Response):
        return form
    fields = dict(form.items())  # a repeated key: its last value
    sid = fields.get("MessageSid", "").strip()
    raw_status = fields.get("MessageStatus", "").strip()
    if not sid or len(sid) > MAX_SID:
        return _plain(400, "MessageSid is missing or too long")
    try:
        status = outbox.parse_status(raw_status)
    except outbox.UnknownStatusError as exc:
        return _plain(400, str(exc))
    raw_code = fields.get("ErrorCode", "").strip()
    code: int | None = None
    if raw_code:
        if not (raw_code.isascii() and raw_code.isdigit()) or len(raw_code) > 9:
            return _plain(400, "ErrorCode must be a number")
        code = int(raw_code)
    app = request.app
    try:
        async with app[DATABASE].write() as session:
            await outbox.record_status(
                session=session, sid=sid, status=status, error_code=code, now=app[CLOCK].now()
            )
        app[METRICS].status_callbacks.labels(str(status)).inc()
    except (OperationalError, DBAPIError, OSError, ConnectionError) as exc:
        return _unavailable(exc)
    return _twiml()


def setup(app: web.Application) -> None:
    app.router.add_post("/twilio/sms", inbound_sms)
    app.router.add_post("/twilio/status", status_callback)
