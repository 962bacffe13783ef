"""Flow and protocol definitions over the API: read, draft, validate, diff, publish, simulate.

Scripts can manage flows from a repository: ``PUT draft`` then ``POST publish``.
Clinicians may read; only admins change anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from bot.appkeys import CLOCK, DATABASE, SETTINGS
from bot.services import flow_admin
from bot.services.flow_admin import FlowAdminError, Kind
from bot.web.api import schemas, serialize
from bot.web.api.auth import ADMIN, STAFF, require
from bot.web.api.errors import ApiError, json_body
from bot.web.audit_log import source
from flows import yamlsrc
from flows.definition import load_flow
from flows.engine import Context
from flows.problems import SourceError
from flows.simulator import simulate as run_simulation

KEY_RE = r"{key:[a-z][a-z0-9_]{0,63}}"


def _kind(request: web.Request) -> Kind:
    return "flow" if request.match_info.get("kind", "flows") == "flows" else "protocol"


def _key(request: web.Request) -> str:
    return request.match_info["key"]


def _error(exc: FlowAdminError) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, [p.as_dict() for p in exc.problems] or None)


def _info(v: flow_admin.VersionInfo | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {
        "version": v.version,
        "status": str(v.status),
        "published_at": serialize.iso(v.published_at),
        "updated_at": serialize.iso(v.updated_at),
        "author": v.author,
        "checksum": v.checksum,
        "running": v.running,
    }


def _summary(s: flow_admin.Summary) -> dict[str, Any]:
    return {
        "key": s.key,
        "title": s.title,
        "published": _info(s.published),
        "draft": _info(s.draft),
        "retired": s.retired,
        "versions": [_info(v) for v in s.versions],
    }


async def list_all(request: web.Request) -> web.Response:
    await require(request, *STAFF)
    async with request.app[DATABASE].read() as session:
        items = await flow_admin.summaries(session=session, kind=_kind(request))
    return web.json_response({"items": [_summary(s) for s in items]})


async def get_one(request: web.Request) -> web.Response:
    await require(request, *STAFF)
    kind, key = _kind(request), _key(request)
    async with request.app[DATABASE].read() as session:
        items = await flow_admin.summaries(session=session, kind=kind, key=key)
        draft = await flow_admin.source_of(session=session, kind=kind, key=key, version="draft")
        latest = await flow_admin.source_of(session=session, kind=kind, key=key, version="latest")
    if not items:
        raise ApiError(404, "not_found", f"no {kind} {key!r}")
    out = _summary(items[0])
    out["draft_source"] = draft.source if draft else None
    out["published_source"] = latest.source if latest else None
    return web.json_response(out)


async def get_source(request: web.Request) -> web.Response:
    """The YAML of one version (``draft``, ``latest`` or a number) as a download."""
    await require(request, *STAFF)
    kind, key = _kind(request), _key(request)
    raw = request.match_info["version"]
    version: int | Literal["draft", "latest"]
    if raw in ("draft", "latest"):
        version = raw  # type: ignore[assignment]
    elif (raw.isascii() and raw.isdigit()) and len(raw) < 9:
        version = int(raw)
    else:
        raise ApiError(404, "not_found", "version must be a number, 'draft' or 'latest'")
    async with request.app[DATABASE].read() as session:
        row = await flow_admin.source_of(session=session, kind=kind, key=key, version=version)
    if row is None:
        raise ApiError(404, "not_found", f"{key} has no version {raw}")
    name = f"{key}-{'draft' if row.version is None else f'v{row.version}'}.yaml"
    return web.Response(
        text=row.source,
        content_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def _yaml_body(request: web.Request) -> str:
    limit = yamlsrc.MAX_SOURCE_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "too_large", f"a definition may be at most {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"a definition may be at most {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_encoding", "the body must be UTF-8 YAML") from exc


async def put_draft(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    kind, key = _kind(request), _key(request)
    text = await _yaml_body(request)
    try:
        async with request.app[DATABASE].write() as session:
            draft, problems = await flow_admin.save_draft(
                session=session,
                kind=kind,
                key=key,
                source=text,
                author_id=who.user_id,
                now=request.app[CLOCK].now(),
            )
    except FlowAdminError as exc:
        raise _error(exc) from exc
    return web.json_response(
        {
            "key": key,
            "status": "draft",
            "checksum": draft.checksum,
            "problems": [p.as_dict() for p in problems],
        }
    )


async def validate(request: web.Request) -> web.Response:
    """Validate YAML without saving it: always 200 with the problems (empty when valid)."""
    await require(request, *ADMIN)
    kind, key = _kind(request), _key(request)
    text = await _yaml_body(request)
    async with request.app[DATABASE].read() as session:
        problems = await flow_admin.validate(session=session, kind=kind, key=key, source=text)
    return web.json_response(
        {"valid": not flow_admin.errors_only(problems), "problems": [p.as_dict() for p in problems]}
    )


async def diff(request: web.Request) -> web.Response:
    await require(request, *STAFF)
    kind, key = _kind(request), _key(request)
    async with request.app[DATABASE].read() as session:
        draft = await flow_admin.source_of(session=session, kind=kind, key=key, version="draft")
        latest = await flow_admin.source_of(session=session, kind=kind, key=key, version="latest")
    if draft is None:
        raise ApiError(404, "no_draft", f"{key} has no draft")
    text = flow_admin.unified_diff(
        latest.source if latest else "",
        draft.source,
        f"{key} v{latest.version}" if latest else "(none)",
        f"{key} draft",
    )
    return web.json_response({"diff": text, **flow_admin.diff_size(text)})


async def publish(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    kind, key = _kind(request), _key(request)
    try:
        async with request.app[DATABASE].write() as session:
            row = await flow_admin.publish(
                session=session,
                kind=kind,
                key=key,
                author_id=who.user_id,
                now=request.app[CLOCK].now(),
                address=source(request),
            )
    except FlowAdminError as exc:
        raise _error(exc) from exc
    return web.json_response(
        {"key": key, "version": row.version, "status": "published"}, status=201
    )


async def rollback(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    kind, key = _kind(request), _key(request)
    body = await json_body(request)
    version = body.get("version")
    if isinstance(version, float) and version.is_integer():
        version = int(version)  # 2.0 is a whole number in JSON
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 1 <= version <= schemas.MAX_VERSION
    ):
        raise ApiError(
            422,
            "invalid",
            "version: must be a published version number",
            [{"field": "version", "message": "must be a positive integer"}],
        )
    try:
        async with request.app[DATABASE].write() as session:
            row = await flow_admin.rollback(
                session=session,
                kind=kind,
                key=key,
                version=version,
                author_id=who.user_id,
                now=request.app[CLOCK].now(),
                address=source(request),
            )
    except FlowAdminError as exc:
        raise _error(exc) from exc
    return web.json_response(
        {"key": key, "version": row.version, "status": "published", "copied_from": version},
        status=201,
    )


async def retire(request: web.Request) -> web.Response:
    who = await require(request, *ADMIN)
    kind, key = _kind(request), _key(request)
    try:
        async with request.app[DATABASE].write() as session:
            warnings = await flow_admin.retire(
                session=session,
                kind=kind,
                key=key,
                author_id=who.user_id,
                now=request.app[CLOCK].now(),
                address=source(request),
            )
    except FlowAdminError as exc:
        raise _error(exc) from exc
    return web.json_response(
        {
            "key": key,
            "status": "retired",
            "warnings": [
                f"protocol {p} still names {key}; its check-ins of {key} will not start"
                for p in warnings
            ],
        }
    )


async def simulate(request: web.Request) -> web.Response:
    await require(request, *STAFF)
    key = _key(request)
    if _kind(request) != "flow":
        raise ApiError(404, "not_found", "only flows can be simulated")
    body = schemas.parse(schemas.Simulate, await json_body(request))
    version: int | Literal["draft", "latest"] = (
        body.version if body.version is not None else "latest"
    )
    async with request.app[DATABASE].read() as session:
        row = await flow_admin.source_of(session=session, kind="flow", key=key, version=version)
        if row is None:
            raise ApiError(404, "not_found", f"{key} has no version {version}")
        flows = await flow_admin.resolver(session=session)
    result = simulate_source(
        row.source,
        body.answers,
        body.language,
        flows,
        request.app[SETTINGS].clinic_name,
        request.app[SETTINGS].clinic_phone,
    )
    return web.json_response(
        {"key": key, "version": row.version if row.version is not None else "draft", **result}
    )


def simulate_source(
    text: str,
    answers: list[str],
    language: str,
    flows: dict[str, Any],
    clinic_name: str,
    clinic_phone: str,
) -> dict[str, Any]:
    """Run a flow's source against scripted answers; handovers follow published flows."""
    try:
        flow = load_flow(text)
    except SourceError as exc:
        raise ApiError(
            422, "invalid", "this version does not load", [p.as_dict() for p in exc.problems]
        ) from exc
    transcript = run_simulation(
        flow,
        answers,
        context=Context(
            first_name="Alex",
            language=language,
            clinic_name=clinic_name or "the clinic",
            clinic_phone=clinic_phone,
        ),
        start=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
        resolve=flows.get,
    )
    return transcript.to_json()


def setup(app: web.Application) -> None:
    r = app.router
    base = "/api/v1/{kind:flows|protocols}"
    r.add_get(base, list_all)
    r.add_get(f"{base}/{KEY_RE}", get_one)
    r.add_get(base + "/" + KEY_RE + "/versions/{version}", get_source)
    r.add_put(f"{base}/{KEY_RE}/draft", put_draft)
    r.add_post(f"{base}/{KEY_RE}/validate", validate)
    r.add_get(f"{base}/{KEY_RE}/diff", diff)
    r.add_post(f"{base}/{KEY_RE}/publish", publish)
    r.add_post(f"{base}/{KEY_RE}/rollback", rollback)
    r.add_post(f"{base}/{KEY_RE}/retire", retire)
    r.add_post(f"/api/v1/flows/{KEY_RE}/simulate", simulate)
