"""The aiohttp application factory; resources live in ``cleanup_ctx`` under typed keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from bot import background
from bot.appkeys import CLOCK, DATABASE, SETTINGS, TRANSPORT
from bot.clock import Clock, SystemClock
from bot.settings import Settings
from bot.sms.factory import build_transport
from bot.sms.transport import Transport
from bot.web import api, health, pages, security, twilio_hooks
from bot.worker import Worker
from db.session import Database

CLIENT_MAX_SIZE = 1024 * 1024


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
        middlewares=[security.security_headers, *api.middlewares(), pages.page_session],
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        if database is not None:
            app[DATABASE] = database
            yield
            return
        db = Database(settings.database_url)
        app[DATABASE] = db
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
    health.setup(app)
    twilio_hooks.setup(app)
    api.setup(app)
    pages.setup(app)
    if extra_setup is not None:
        extra_setup(app)
    return app


async def _worker_ctx(app: web.Application) -> AsyncIterator[None]:
    from bot.ticks import build_ticks

    worker = Worker(build_ticks(app))
    worker.start()
    yield
    await worker.stop()
