"""Admin pages for flows and protocols: list, editor with validate/save/diff/simulate/publish."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import flow_admin
from bot.services.flow_admin import FlowAdminError, Kind
from bot.web.api.errors import ApiError
from bot.web.api.flows import simulate_source
from bot.web.audit_log import source
from bot.web.pages.common import form_with_csrf, render, require_user
from flows import yamlsrc

KINDS: dict[str, Kind] = {"flows": "flow", "protocols": "protocol"}
MAX_REPLIES = 60

NEW_FLOW_TEMPLATE = """key: {key}
title: New flow
description: What this check-in asks and why.
language: en
nodes:
  - id: ask_mood
    type: ask
    text: "Hi {{first_name}}, how is your mood today from 0 (worst) to 10 (best)?"
    answer: {{type: integer, min: 0, max: 10}}
    next: done
  - id: done
    type: end
    text: "Thank you, {{first_name}}."
"""


def _kind(request: web.Request) -> Kind:
    kind = KINDS.get(request.match_info["kind"])
    if kind is None:
        raise web.HTTPNotFound(text="Not found.")
    return kind


async def list_page(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    async with request.app[DATABASE].read() as session:
        flows = await flow_admin.summaries(session=session, kind="flow")
        protocols = await flow_admin.summaries(session=session, kind="protocol")
    return render(request, "flows.html", {"flows": flows, "protocols": protocols})


async def new_flow(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    key = request.query.get("key", "").strip()
    if not key:
        return render(request, "flow_new.html", {"error": ""})
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key):
        return render(
            request,
            "flow_new.html",
            {"error": "A key is lower-case letters, digits and _, starting with a letter."},
            status=422,
        )
    raise web.HTTPSeeOther(f"/admin/flows/{key}")


async def _editor(
    request: web.Request,
    kind: Kind,
    key: str,
    *,
    text: str | None = None,
    extra: dict[str, Any] | None = None,
    status: int = 200,
) -> web.Response:
    async with request.app[DATABASE].read() as session:
        items = await flow_admin.summaries(session=session, kind=kind, key=key)
        draft = await flow_admin.source_of(session=session, kind=kind, key=key, version="draft")
        latest = await flow_admin.source_of(session=session, kind=kind, key=key, version="latest")
    if text is None:
        if draft is not None:
            text = draft.source
        elif latest is not None:
            text = latest.source
        else:
            text = (
                NEW_FLOW_TEMPLATE.format(key=key)
                if kind == "flow"
                else f"key: {key}\ntitle: New protocol\ncheckins: []\n"
            )
    languages = ["en", "es"]
    context = {
        "kind": kind,
        "kind_path": "flows" if kind == "flow" else "protocols",
        "key": key,
        "summary": items[0] if items else None,
        "has_draft": draft is not None,
        "text": text,
        "problems": [],
        "checked": False,
        "diff": None,
        "sim": None,
        "replies": [],
        "lang": "en",
        "languages": languages,
        "notice": "",
        "error": "",
    }
    context.update(extra or {})
    return render(request, "flow_edit.html", context, status=status)


async def editor_page(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    return await _editor(
        request,
        _kind(request),
        request.match_info["key"],
        extra={"notice": request.query.get("notice", "")},
    )


async def editor_post(request: web.Request) -> web.Response:
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    kind, key = _kind(request), request.match_info["key"]
    action = form.get("action", "validate")
    text = form.get("source", "")
    if len(text.encode("utf-8")) > yamlsrc.MAX_SOURCE_BYTES:
        return await _editor(
            request,
            kind,
            key,
            text=text[:2000],
            extra={"error": f"The text is over {yamlsrc.MAX_SOURCE_BYTES // 1024} KiB."},
            status=413,
        )
    text = text.replace("\r\n", "\n")
    now = request.app[CLOCK].now()
    extra: dict[str, Any] = {"checked": True}
    status = 200
    async with request.app[DATABASE].read() as session:
        problems = await flow_admin.validate(session=session, kind=kind, key=key, source=text)
        latest = await flow_admin.source_of(session=session, kind=kind, key=key, version="latest")
        live_flows = await flow_admin.resolver(session=session)
    extra["problems"] = problems
    errors = flow_admin.errors_only(problems)
    if action == "diff":
        extra["diff"] = flow_admin.unified_diff(
            latest.source if latest else "",
            text,
            f"{key} v{latest.version}" if latest else "(none)",
            "editor",
        )
    elif action == "simulate" and kind == "flow":
        replies = [r for r in form.get("replies", "").split("\n") if r.strip()][:MAX_REPLIES]
        if form.get("reply", "").strip():
            replies.append(form["reply"].strip()[:1600])
        if form.get("restart"):
            replies = []
        lang = form.get("lang", "en") if form.get("lang") in ("en", "es") else "en"
        extra.update({"replies": replies, "lang": lang})
        if errors:
            extra["error"] = "Fix the errors before simulating."
            status = 422
        else:
            settings = request.app[SETTINGS]
            try:
                extra["sim"] = simulate_source(
                    text, replies, lang, live_flows, settings.clinic_name, settings.clinic_phone
                )
            except ApiError as exc:
                extra["error"] = exc.message
    elif action in ("save", "publish"):
        if errors:
            extra["error"] = "Not saved: fix the errors listed below first."
            status = 422
        else:
            published: int | None = None
            try:
                async with request.app[DATABASE].write() as session:
                    await flow_admin.save_draft(
                        session=session,
                        kind=kind,
                        key=key,
                        source=text,
                        author_id=user.user_id,
                        now=now,
                    )
                    if action == "publish":
                        row = await flow_admin.publish(
                            session=session,
                            kind=kind,
                            key=key,
                            author_id=user.user_id,
                            now=now,
                            address=source(request),
                        )
                        published = row.version
                if published is not None:  # redirect only after the commit
                    raise web.HTTPSeeOther(
                        f"/admin/{'flows' if kind == 'flow' else 'protocols'}/{key}"
                        f"?notice=Published+version+{published}"
                    )
                extra["notice"] = "Draft saved. It is not used until you publish it."
            except FlowAdminError as exc:
                extra["error"] = exc.message
                extra["problems"] = exc.problems or problems
                status = exc.status
    return await _editor(request, kind, key, text=text, extra=extra, status=status)


async def version_action(request: web.Request) -> web.Response:
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    kind, key = _kind(request), request.match_info["key"]
    action = request.match_info["action"]
    now = request.app[CLOCK].now()
    base = f"/admin/{'flows' if kind == 'flow' else 'protocols'}/{key}"
    try:
        async with request.app[DATABASE].write() as session:
            if action == "rollback":
                version = form.get("version", "")
                if not (version.isascii() and version.isdigit()):
                    raise web.HTTPSeeOther(base)
                row = await flow_admin.rollback(
                    session=session,
                    kind=kind,
                    key=key,
                    version=int(version),
                    author_id=user.user_id,
                    now=now,
                    address=source(request),
                )
                notice = f"Version {version} republished as version {row.version}"
            elif action == "retire":
                warnings = await flow_admin.retire(
                    session=session,
                    kind=kind,
                    key=key,
                    author_id=user.user_id,
                    now=now,
                    address=source(request),
                )
                notice = "Retired: no new check-ins will use it."
                if warnings:
                    notice += " Warning: still named by protocols " + ", ".join(warnings) + "."
            elif action == "discard":
                draft = await flow_admin.source_of(
                    session=session, kind=kind, key=key, version="draft"
                )
                if draft is not None:
                    await session.delete(draft)
                notice = "Draft discarded."
            else:
                raise web.HTTPNotFound(text="Not found.")
    except FlowAdminError as exc:
        return await _editor(
            request,
            kind,
            key,
            extra={"error": exc.message, "problems": exc.problems},
            status=exc.status,
        )
    raise web.HTTPSeeOther(f"{base}?notice={notice.replace(' ', '+')}")


async def upload(request: web.Request) -> web.Response:
    """A .yaml file into the editor (not saved until the admin saves or publishes)."""
    user = require_user(request, admin=True)
    kind, key = _kind(request), request.match_info["key"]
    if (
        request.content_length is not None
        and request.content_length > yamlsrc.MAX_SOURCE_BYTES + 4096
    ):
        return await _editor(
            request, kind, key, extra={"error": "The file is too large."}, status=413
        )
    form = await request.post()
    token = form.get("csrf_token")
    if not isinstance(token, str) or not user.csrf_ok(token):
        raise web.HTTPForbidden(text="The form expired. Reload the page and try again.")
    field = form.get("file")
    if not isinstance(field, web.FileField):
        return await _editor(
            request, kind, key, extra={"error": "Choose a .yaml file to upload."}, status=422
        )
    raw = field.file.read(yamlsrc.MAX_SOURCE_BYTES + 1)
    if len(raw) > yamlsrc.MAX_SOURCE_BYTES:
        return await _editor(
            request, kind, key, extra={"error": "The file is too large."}, status=413
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return await _editor(
            request, kind, key, extra={"error": "The file is not UTF-8 text."}, status=422
        )
    async with request.app[DATABASE].read() as session:
        problems = await flow_admin.validate(session=session, kind=kind, key=key, source=text)
    return await _editor(
        request,
        kind,
        key,
        text=text,
        extra={
            "problems": problems,
            "checked": True,
            "notice": "File loaded into the editor; save or publish to keep it.",
        },
    )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/flows", list_page)
    r.add_get("/admin/flows/new", new_flow)
    key = "{key:[a-z][a-z0-9_]{0,63}}"
    r.add_get("/admin/{kind:flows|protocols}/" + key, editor_page)
    r.add_post("/admin/{kind:flows|protocols}/" + key, editor_post)
    r.add_post("/admin/{kind:flows|protocols}/" + key + "/upload", upload)
    r.add_post(
        "/admin/{kind:flows|protocols}/" + key + "/{action:rollback|retire|discard}", version_action
    )
