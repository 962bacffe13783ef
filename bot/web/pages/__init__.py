"""Server-rendered pages for clinicians and admins (Jinja, autoescaped, no inline script)."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bot.appkeys import SETTINGS
from bot.web.pages import admin, auth, demo_phone, flows_admin, keepalive, patients, queue, users
from bot.web.pages.common import page_session
from bot.web.reasons import plain

HERE = Path(__file__).resolve().parent.parent


def _static_urls(app: web.Application) -> Callable[[str], str]:
    """``static(name)``: the versioned URL, remembered per file state. aiohttp reads and
    hashes the whole file for every ``url_for``, and every page asks for two of them."""
    urls: dict[tuple[str, int, int], str] = {}
    directory = HERE / "static"

    def static(name: str) -> str:
        try:
            st = os.stat(directory / name)
        except OSError:
            return str(app.router["static"].url_for(filename=name))
        key = (name, st.st_mtime_ns, st.st_size)
        url = urls.get(key)
        if url is None:
            if len(urls) > 256:  # edits during development; never grows in production
                urls.clear()
            url = urls[key] = str(app.router["static"].url_for(filename=name))
        return url

    return static


def setup(app: web.Application) -> None:
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.ChainableUndefined,
    )
    env.filters["plain_reason"] = plain
    env.globals["static"] = _static_urls(app)
    clinic_zone = ZoneInfo(app[SETTINGS].clinic_timezone)

    def ts(moment: datetime | None) -> str:
        """A time in the clinic's zone with its abbreviation (``CLINIC_TIMEZONE``)."""
        return moment.astimezone(clinic_zone).strftime("%Y-%m-%d %H:%M %Z") if moment else ""

    env.filters["ts"] = ts
    env.globals["clinic_zone"] = clinic_zone
    app.router.add_static("/static/", str(HERE / "static"), name="static", append_version=True)
    auth.setup(app)
    queue.setup(app)
    patients.setup(app)
    admin.setup(app)
    users.setup(app)
    flows_admin.setup(app)
    demo_phone.setup(app)
    keepalive.setup(app)


__all__ = ["page_session", "setup"]
