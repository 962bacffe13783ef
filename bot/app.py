"""The aiohttp application factory; resources live in ``cleanup_ctx`` under typed keys."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from twilio.request_validator import RequestValidator

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
from bot.clock import Clock, SystemClock
from bot.keyed_locks import KeyedLocks
from bot.metrics import Metrics
from bot.services.outbox import GroupRecorder
from bot.services.reply_batch import ReplyGroups
from bot.settings import Settings
from bot.sms.factory import build_transport
from bot.sms.transport import Transport
from bot.web import api, health, metrics_view, pages, security, twilio_hooks
from bot.web.error_pages import error_pages
from bot.web.request_ids import request_ids
from bot.worker import Worker
from db.session import Database

CLIENT_MAX_SIZE = 1024 * 1024

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    transport: Callable[[], Transport] | None = None,
    with_worker: bool = False,
    extra_setup: Callable[[web.Application], None] | None = None,
) -> web.Application:
    """Build the app. A ``database`` passed in is shared, not disposed, by the app.

    ``transport`` is a factory called inside the running loop; the default
    follows ``SMS_TRANSPORT``.
    """
    app = web.Application(
        client_max_size=CLIENT_MAX_SIZE,
        middlewares=[
            request_ids,
            security.security_headers,
            error_pages,
            *api.middlewares(),
            pages.page_session,
        ],
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[METRICS] = Metrics()
    app[SENDER_LOCKS] = KeyedLocks()
    if settings.twilio_auth_token:  # what ``settings.verify_signatures`` means
        app[TWILIO_VALIDATOR] = RequestValidator(settings.twilio_auth_token)
    elif not settings.demo:
        log.warning("TWILIO_AUTH_TOKEN is not set: Twilio webhooks (/twilio/*) answer 403")

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        if database is not None:
            app[DATABASE] = database
            app[RECORDER] = GroupRecorder(database, app[CLOCK])
            app[REPLY_GROUPS] = ReplyGroups(database, settings)
            yield
            return
        db = Database(settings.database_url)
        app[DATABASE] = db
        app[RECORDER] = GroupRecorder(db, app[CLOCK])
        app[REPLY_GROUPS] = ReplyGroups(db, settings)
        yield
        await db.dispose()

    async def transport_ctx(app: web.Application) -> AsyncIterator[None]:
        sms = transport() if transport is not None else build_transport(settings)
        app[TRANSPORT] = sms
        yield
        await sms.close()

    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(transport_ctx)
    app.cleanup_ctx.append(background.background_ctx)
    if with_worker:
        app.cleanup_ctx.append(_worker_ctx)
    security.setup(app)
    health.setup(app)
    metrics_view.setup(app)
    twilio_hooks.setup(app)
    api.setup(app)
    pages.setup(app)
    if extra_setup is not None:
        extra_setup(app)
    return app


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    from bot.ticks import build_ticks

    worker = Worker(build_ticks(app), app[METRICS])
    worker.start()
    yield
    await worker.stop()
