"""Admin pages for flows and protocols: list, editor with validate/save/diff/simulate/publish.

The editor is one form that works without script. With script (``static/flow_editor.js``)
validate, diff and simulate post the same form with ``Accept: application/json`` and get
JSON back, so the page updates in place; save and publish stay ordinary posts.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import flow_admin
from bot.services.flow_admin import FlowAdminError, Kind
from bot.web.api.errors import ApiError
from bot.web.api.flows import simulate_source
from bot.web.audit_log import source
from bot.web.pages import notices
from bot.web.pages.common import form_with_csrf, render, require_user
from db.enums import VersionStatus
from flows import yamlsrc
from flows.problems import Problem, SourceError

KINDS: dict[str, Kind] = {"flows": "flow", "protocols": "protocol"}
MAX_REPLIES = 60
LIVE_ACTIONS = frozenset({"validate", "diff", "simulate", "restart"})
"""Actions the editor's script posts for JSON (the page stays put); the others navigate."""

INSTRUMENTS: dict[str, str] = {
    "phq9": "PHQ-9",
    "phq2": "PHQ-2",
    "gad7": "GAD-7",
    "gad2": "GAD-2",
    "cssrs_screen": "C-SSRS screener",
    "mania_screen": "ASRM (Altman Self-Rating Mania Scale)",
    "asrm": "ASRM (Altman Self-Rating Mania Scale)",
    "alcohol_sedatives": "AUDIT-C (its alcohol questions)",
}
"""Library flows that are, or contain, a validated instrument. A flow's own
``validated: true`` marks one too; this list also covers AUDIT-C inside
``alcohol_sedatives``, whose other question is not validated (so it says false)."""

LANGUAGE_NAMES = {"en": "English", "es": "Spanish"}

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


def _path(kind: Kind) -> str:
    return "flows" if kind == "flow" else "protocols"


# -- warnings beside the editor ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRef:
    id: str
    line: int


@dataclass(frozen=True, slots=True)
class EditorWarning:
    """Advice that is not a validation problem: shown beside the editor, never blocks."""

    message: str
    nodes: list[NodeRef] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "nodes": [{"id": n.id, "line": n.line} for n in self.nodes],
        }


def _parsed(text: str | None) -> yamlsrc.Source | None:
    if not text:
        return None
    try:
        src = yamlsrc.load(text)
    except SourceError:
        return None
    return src if isinstance(src.data, dict) else None


def _is_text_map(value: Any) -> bool:
    """``{en: ..., es: ...}``: a message in several languages."""
    return (
        isinstance(value, dict)
        and "en" in value
        and len(value) > 1
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


def _text_maps(value: Any, path: tuple[str | int, ...] = ()) -> dict[tuple[str | int, ...], Any]:
    """Every language map inside one node, by its path in the node."""
    if _is_text_map(value):
        return {path: value}
    out: dict[tuple[str | int, ...], Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_text_maps(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(_text_maps(v, (*path, i)))
    return out


def _nodes_by_id(data: dict[str, Any]) -> dict[str, tuple[int, dict[str, Any]]]:
    nodes = data.get("nodes")
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, node in enumerate(nodes if isinstance(nodes, list) else []):
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            out.setdefault(node["id"], (i, node))
    return out


def translation_warnings(
    text: str, published: str | None, version: int | None
) -> list[EditorWarning]:
    """Nodes whose English text changed and another language's did not (or the reverse),
    compared with the published version: one language now says something the other does
    not. Nodes new or removed since then, and texts in one language only, are left out."""
    new, old = _parsed(text), _parsed(published)
    if new is None or old is None:
        return []
    old_nodes = _nodes_by_id(old.data)
    changed: dict[tuple[str, str], list[NodeRef]] = {}
    for nid, (i, node) in _nodes_by_id(new.data).items():
        if nid not in old_nodes:
            continue
        before = _text_maps(old_nodes[nid][1])
        seen: set[tuple[str, str]] = set()
        for path, now in _text_maps(node).items():
            then = before.get(path)
            if then is None:
                continue
            en_changed = now["en"] != then["en"]
            for lang in sorted((set(now) & set(then)) - {"en"}):
                other_changed = now[lang] != then[lang]
                if en_changed and not other_changed:
                    seen.add(("en", lang))
                elif other_changed and not en_changed:
                    seen.add((lang, "en"))
        for pair in sorted(seen):
            changed.setdefault(pair, []).append(NodeRef(nid, new.pos(("nodes", i, "id"))[0]))
    against = f"published v{version}" if version is not None else "the published version"
    out = []
    for (done, not_done), refs in sorted(changed.items()):
        out.append(
            EditorWarning(
                f"{_language(done)} text changed but not the {_language(not_done)}, compared "
                f"with {against}; update both or the patients get different questions "
                f"({len(refs)} node{'s' if len(refs) != 1 else ''})",
                refs,
            )
        )
    return out


def _language(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def instrument_warning(key: str, text: str, published: str | None) -> EditorWarning | None:
    """A validated instrument (listed, or ``validated: true`` in either version)."""
    name = INSTRUMENTS.get(key)
    if name is None:
        for src in (_parsed(published), _parsed(text)):
            if src is not None and src.data.get("validated") is True:
                title = src.data.get("title")
                name = str(title) if isinstance(title, str) and title else key
                break
    if name is None:
        return None
    return EditorWarning(
        f"This flow is or contains the {name}, a validated instrument: changing the wording of "
        "its questions or answer options, or its scoring, invalidates it, and its results are "
        "then no longer comparable with the published scale. To adapt it, copy it to a new "
        "flow under another key."
    )


def editor_warnings(
    kind: Kind, key: str, text: str, published: str | None, version: int | None
) -> list[EditorWarning]:
    if kind != "flow":
        return []
    found = instrument_warning(key, text, published)
    return ([found] if found else []) + translation_warnings(text, published, version)


async def _warnings(
    kind: Kind, key: str, text: str, latest: flow_admin.VersionRow | None
) -> list[EditorWarning]:
    """Parsing is CPU work that grows with the draft: off the event loop, like validation."""
    return await asyncio.to_thread(
        editor_warnings,
        kind,
        key,
        text,
        latest.source if latest is not None else None,
        latest.version if latest is not None else None,
    )


# -- the versions list -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VersionRow:
    info: flow_admin.VersionInfo
    label: str
    superseded_by: int | None


def version_rows(versions: Sequence[flow_admin.VersionInfo]) -> list[VersionRow]:
    """Newest first, each labelled: a published version that a newer one replaced is
    "superseded (by vN)"; only the newest is "published" (or "retired")."""
    rows = []
    newer: int | None = None
    for info in versions:
        if info.status is VersionStatus.PUBLISHED and newer is not None:
            rows.append(VersionRow(info, f"superseded (by v{newer})", newer))
        else:
            rows.append(VersionRow(info, str(info.status), None))
        newer = info.version
    return rows


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
    extra = extra or {}
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
    summary = items[0] if items else None
    context: dict[str, Any] = {
        "kind": kind,
        "kind_path": _path(kind),
        "key": key,
        "summary": summary,
        "versions": version_rows(summary.versions if summary else []),
        "has_draft": draft is not None,
        "text": text,
        "problems": [],
        "checked": False,
        "diff": None,
        "sim": None,
        "sim_error": "",
        "replies": [],
        "lang": "en",
        "languages": languages,
        "note": "",
        "max_note": flow_admin.MAX_NOTE,
    }
    context.update(extra)
    if "warnings" not in extra:
        context["warnings"] = await _warnings(kind, key, text, latest)
    return render(request, "flow_edit.html", context, status=status)


async def editor_page(request: web.Request) -> web.Response:
    require_user(request, admin=True)
    return await _editor(request, _kind(request), request.match_info["key"])


def _wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _live_json(action: str, extra: dict[str, Any], status: int) -> web.Response:
    """What the editor's script needs to update the page in place."""
    problems: list[Problem] = extra.get("problems", [])
    return web.json_response(
        {
            "action": action,
            "checked": bool(extra.get("checked")),
            "problems": [p.as_dict() for p in problems],
            "errors": len(flow_admin.errors_only(problems)),
            "warnings": [w.as_dict() for w in extra.get("warnings", [])],
            "diff": extra.get("diff"),
            "sim": extra.get("sim"),
            "sim_error": extra.get("sim_error", ""),
            "replies": extra.get("replies", []),
            "lang": extra.get("lang", "en"),
            "error": extra.get("error", ""),
        },
        status=status,
    )


async def editor_post(request: web.Request) -> web.Response:
    """Validate, diff, simulate, save or publish what is in the editor.

    Validate, diff and simulate answer JSON to a request that accepts it (the page's
    script); everything answers the whole page otherwise."""
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    kind, key = _kind(request), request.match_info["key"]
    action = form.get("action", "validate")
    if form.get("restart"):  # the Restart button of pages rendered before it had an action
        action = "restart"
    as_json = action in LIVE_ACTIONS and _wants_json(request)
    text = form.get("source", "")
    if len(text.encode("utf-8")) > yamlsrc.MAX_SOURCE_BYTES:
        error = f"The text is over {yamlsrc.MAX_SOURCE_BYTES // 1024} KiB."
        if as_json:
            return _live_json(action, {"error": error}, 413)
        return await _editor(
            request, kind, key, text=text[:2000], extra={"error": error}, status=413
        )
    text = text.replace("\r\n", "\n")
    note = form.get("note", "").strip()
    now = request.app[CLOCK].now()
    extra: dict[str, Any] = {"checked": True, "note": note}
    status = 200
    async with request.app[DATABASE].read() as session:
        problems = await flow_admin.validate(session=session, kind=kind, key=key, source=text)
        latest = await flow_admin.source_of(session=session, kind=kind, key=key, version="latest")
        live_flows = await flow_admin.resolver(session=session)
    extra["problems"] = problems
    extra["warnings"] = await _warnings(kind, key, text, latest)
    errors = flow_admin.errors_only(problems)
    if action == "diff":
        extra["diff"] = flow_admin.unified_diff(
            latest.source if latest else "",
            text,
            f"{key} v{latest.version}" if latest else "(none)",
            "editor",
        )
    elif action in ("simulate", "restart") and kind == "flow":
        replies = [r for r in form.get("replies", "").split("\n") if r.strip()][:MAX_REPLIES]
        if form.get("reply", "").strip():
            replies.append(form["reply"].strip()[:1600])
        if action == "restart":
            replies = []
        lang = form.get("lang", "en") if form.get("lang") in ("en", "es") else "en"
        extra.update({"replies": replies, "lang": lang})
        if errors:
            extra["sim_error"] = "Fix the errors before simulating."
            status = 422
        else:
            settings = request.app[SETTINGS]
            try:
                extra["sim"] = simulate_source(
                    text, replies, lang, live_flows, settings.clinic_name, settings.clinic_phone
                )
            except ApiError as exc:
                extra["sim_error"] = exc.message
                status = exc.status
    elif action in ("save", "publish"):
        if errors:
            extra["error"] = (
                "Not saved: fix the errors listed beside the editor first."
                if action == "save"
                else "Not published: fix the errors listed beside the editor first."
            )
            status = 422
        elif action == "publish" and not note:
            extra["error"] = "Not published: write a short change note (what changed and why)."
            status = 422
        elif action == "publish" and len(note) > flow_admin.MAX_NOTE:
            extra["error"] = (
                f"Not published: the change note is {len(note)} characters; "
                f"keep it to {flow_admin.MAX_NOTE}."
            )
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
                            note=note,
                        )
                        published = row.version
                if published is not None:  # redirect only after the commit
                    raise notices.to(f"/admin/{_path(kind)}/{key}", notice="published")
                extra["notice"] = "Draft saved. It is not used until you publish it."
            except FlowAdminError as exc:
                extra["error"] = exc.message
                extra["problems"] = exc.problems or problems
                status = exc.status
    if as_json:
        return _live_json(action, extra, status)
    return await _editor(request, kind, key, text=text, extra=extra, status=status)


async def version_action(request: web.Request) -> web.Response:
    user = require_user(request, admin=True)
    form = await form_with_csrf(request, user)
    kind, key = _kind(request), request.match_info["key"]
    action = request.match_info["action"]
    now = request.app[CLOCK].now()
    base = f"/admin/{_path(kind)}/{key}"
    try:
        async with request.app[DATABASE].write() as session:
            if action == "rollback":
                version = form.get("version", "")
                if not (version.isascii() and version.isdigit()):
                    raise web.HTTPSeeOther(base)
                await flow_admin.rollback(
                    session=session,
                    kind=kind,
                    key=key,
                    version=int(version),
                    author_id=user.user_id,
                    now=now,
                    address=source(request),
                )
                notice = "republished"
            elif action == "retire":
                warnings = await flow_admin.retire(
                    session=session,
                    kind=kind,
                    key=key,
                    author_id=user.user_id,
                    now=now,
                    address=source(request),
                )
                notice = "retired_named" if warnings else "retired"
            elif action == "discard":
                draft = await flow_admin.source_of(
                    session=session, kind=kind, key=key, version="draft"
                )
                if draft is not None:
                    await session.delete(draft)
                notice = "discarded"
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
    raise notices.to(base, notice=notice)


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
