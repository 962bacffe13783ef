"""Running the web app and/or the worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.app import create_app
from bot.logs import configure
from bot.settings import Settings
from bot.startup import StartupError, check_database

log = logging.getLogger(__name__)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # POSIX: the Procfile's platforms
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve(
    settings: Settings,
    *,
    with_worker: bool,
    on_started: Callable[[], Awaitable[None]] | None = None,
) -> None:
    configure(settings.log_level, settings.log_format)
    await check_database(settings.database_url)
    app = create_app(settings, with_worker=with_worker)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {settings.port} on {settings.host} is in use: stop what is using it, "
                "or set PORT (or --port) to a free port"
            ) from None
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    log.info("serving on http://%s:%d", settings.host, settings.port)
    try:
        if on_started is not None:
            await on_started()
        await _wait_for_signal()
    finally:
        await runner.cleanup()


async def run_worker(settings: Settings) -> None:
    """The worker alone: the same app resources, no HTTP listener."""
    configure(settings.log_level, settings.log_format)
    await check_database(settings.database_url)
    app = create_app(settings, with_worker=True)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    log.info("worker running")
    try:
        await _wait_for_signal()
    finally:
        await runner.cleanup()
