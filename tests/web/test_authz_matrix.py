"""Every route the app registers × every role, against an explicit table of expectations.

A route the app serves but the table does not list fails the test, so a new route
cannot ship without someone deciding who may call it. "Allowed" is checked against
real rows (fresh ones per call), so it means a 2xx/3xx answer, never a lucky 404.

Roles (the README): clinicians read patients, work escalations, record treatments and
send ad-hoc check-ins; admins may do all of that and create/edit patients, enrol them
in protocols, change their status and manage flows and protocols.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from aiohttp import ClientResponse, FormData
from sqlalchemy import select

from bot import library
from bot.services.accounts import create_token
from bot.services.escalations import raise_escalation
from db.enums import EscalationStatus, Role, Severity
from db.models import ApiToken, Escalation, Patient, Treatment, User
from tests.web.harness import START, Harness, harness, new_sid

RoleName = Literal["anon", "clinician", "admin"]
ROLES: tuple[RoleName, ...] = ("anon", "clinician", "admin")
UNKNOWN_ID = 987654


@pytest.fixture
async def h(db_url: str):  # type: ignore[no-untyped-def]
    async with harness(db_url) as hh:
        yield hh


# -- requests and the context they are built in ---------------------------------------------


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    json: Any = None
    form: dict[str, str] | None = None  # a page form; the CSRF token is added for signed-in roles
    upload: tuple[str, bytes] | None = None  # a multipart page form with one file
    body: bytes | None = None  # a raw body (YAML)
    signed_twilio: bool = False


@dataclass
class Ctx:
    h: Harness
    ids: dict[str, int]
    emails: dict[str, str]
    tokens: dict[str, str]
    role: RoleName = "anon"
    csrf: str = ""
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def me(self) -> int:
        """The acting user (the clinician stands in for anonymous callers)."""
        return self.ids["clinician" if self.role == "anon" else self.role]

    def unique(self, stem: str) -> str:
        return f"{stem}{next(self.seq)}"


async def _setup_users(h: Harness) -> Ctx:
    ids: dict[str, int] = {}
    emails: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for name, role in (("clinician", Role.CLINICIAN), ("admin", Role.ADMIN)):
        email = await h.user(role)
        async with h.db.write() as s:
            user, token = await create_token(session=s, email=email, label="m", now=h.clock.now())
            ids[name], emails[name], tokens[name] = user.id, email, token
    return Ctx(h, ids, emails, tokens)


# -- fresh rows ------------------------------------------------------------------------------


async def patient(ctx: Ctx) -> int:
    p = await ctx.h.patient(ctx.unique("Pat"))
    return p.id


async def escalation(ctx: Ctx, *, claimed_by: int | None = None) -> int:
    pid = await patient(ctx)
    async with ctx.h.db.write() as s:
        e = raise_escalation(
            session=s,
            severity=Severity.HIGH,
            reason="phq9_severe",
            summary="PHQ-9 22",
            now=ctx.h.clock.now(),
            patient_id=pid,
        )
        if claimed_by is not None:
            e.status = EscalationStatus.CLAIMED
            e.claimed_by = claimed_by
            e.claimed_at = ctx.h.clock.now()
        await s.flush()
        return e.id


def flow_yaml(key: str) -> str:
    return f"""key: {key}
title: Matrix flow
description: A one-question flow for the authorization matrix.
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


async def admin_api(ctx: Ctx, method: str, path: str, **kw: Any) -> ClientResponse:
    resp = await ctx.h.client.request(
        method, path, headers={"Authorization": f"Bearer {ctx.tokens['admin']}"}, **kw
    )
    assert resp.status < 300, (method, path, resp.status, await resp.text())
    return resp


async def draft(ctx: Ctx) -> str:
    """A fresh flow key with a valid draft (saved by the admin, whoever is being tested)."""
    key = ctx.unique("matrix_flow_")
    await admin_api(ctx, "PUT", f"/api/v1/flows/{key}/draft", data=flow_yaml(key).encode())
    return key


async def published(ctx: Ctx) -> str:
    key = await draft(ctx)
    await admin_api(ctx, "POST", f"/api/v1/flows/{key}/publish")
    return key


def new_phone(ctx: Ctx) -> str:
    return f"+1202556{next(ctx.seq):04d}"


def patient_form(ctx: Ctx) -> dict[str, str]:
    return {
        "first_name": ctx.unique("Form"),
        "phone": new_phone(ctx),
        "timezone": "America/Chicago",
        "language": "en",
        "quiet_enabled": "on",
        "quiet_start": "21:00",
        "quiet_end": "08:00",
    }


# -- the table -------------------------------------------------------------------------------

Kind = Literal["api", "page", "public", "twilio", "login", "logout", "metrics"]
Make = Callable[[Ctx], Awaitable[list[Req]]]


@dataclass(frozen=True)
class Rule:
    kind: Kind
    make: Make
    clinician: bool = True  # may a clinician call it (admins may call everything)
    optional: bool = False  # being added by another change; may be absent


def one(build: Callable[[Ctx], Awaitable[Req]]) -> Make:
    async def make(ctx: Ctx) -> list[Req]:
        return [await build(ctx)]

    return make


def fixed(*reqs: Req) -> Make:
    async def make(_ctx: Ctx) -> list[Req]:
        return list(reqs)

    return make


async def _patient_get(ctx: Ctx, suffix: str = "") -> Req:
    return Req("GET", f"/api/v1/patients/{await patient(ctx)}{suffix}")


async def _messages(ctx: Ctx) -> Req:
    return await _patient_get(ctx, "/messages")


async def _checkins(ctx: Ctx) -> Req:
    return await _patient_get(ctx, "/checkins")


async def _api_patient_create(ctx: Ctx) -> Req:
    body = {"first_name": ctx.unique("Api"), "phone": new_phone(ctx), "timezone": "Europe/Berlin"}
    return Req("POST", "/api/v1/patients", json=body)


async def _api_patient_patch(ctx: Ctx) -> Req:
    return Req("PATCH", f"/api/v1/patients/{await patient(ctx)}", json={"status": "paused"})


async def _api_checkin(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/patients/{await patient(ctx)}/checkins", json={"flow": "phq9"})


async def _api_treatment(ctx: Ctx) -> Req:
    body = {"kind": "ketamine infusion", "administered_at": START.isoformat()}
    return Req("POST", f"/api/v1/patients/{await patient(ctx)}/treatments", json=body)


async def _api_enrollment(ctx: Ctx) -> Req:
    body = {"protocol": "ketamine_induction"}
    return Req("POST", f"/api/v1/patients/{await patient(ctx)}/enrollments", json=body)


async def _api_escalation(ctx: Ctx) -> Req:
    return Req("GET", f"/api/v1/escalations/{await escalation(ctx)}")


async def _api_claim(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/escalations/{await escalation(ctx)}/claim")


async def _api_release(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/escalations/{await escalation(ctx, claimed_by=ctx.me)}/release")


async def _api_resolve(ctx: Ctx) -> Req:
    body = {"disposition": "reached_patient", "note": "spoke"}
    return Req("POST", f"/api/v1/escalations/{await escalation(ctx)}/resolve", json=body)


async def _flow_lists(_ctx: Ctx) -> list[Req]:
    return [Req("GET", "/api/v1/flows"), Req("GET", "/api/v1/protocols")]


async def _flow_one(_ctx: Ctx) -> list[Req]:
    return [Req("GET", "/api/v1/flows/phq9"), Req("GET", "/api/v1/protocols/ketamine_induction")]


async def _flow_versions(_ctx: Ctx) -> list[Req]:
    return [
        Req("GET", "/api/v1/flows/phq9/versions/latest"),
        Req("GET", "/api/v1/flows/phq9/versions/1"),
    ]


async def _flow_put_draft(ctx: Ctx) -> Req:
    key = ctx.unique("matrix_put_")
    return Req("PUT", f"/api/v1/flows/{key}/draft", body=flow_yaml(key).encode())


async def _flow_validate(ctx: Ctx) -> Req:
    return Req("POST", "/api/v1/flows/daily_mood/validate", body=flow_yaml("daily_mood").encode())


async def _flow_diff(ctx: Ctx) -> Req:
    return Req("GET", f"/api/v1/flows/{await draft(ctx)}/diff")


async def _flow_publish(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/flows/{await draft(ctx)}/publish")


async def _flow_rollback(ctx: Ctx) -> Req:
    key = await published(ctx)
    await admin_api(ctx, "PUT", f"/api/v1/flows/{key}/draft", data=flow_yaml(key).encode())
    await admin_api(ctx, "POST", f"/api/v1/flows/{key}/publish")
    return Req("POST", f"/api/v1/flows/{key}/rollback", json={"version": 1})


async def _flow_retire(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/flows/{await published(ctx)}/retire")


async def _flow_simulate(_ctx: Ctx) -> Req:
    return Req("POST", "/api/v1/flows/phq9/simulate", json={"answers": ["1", "2"]})


async def _fhir_patient(ctx: Ctx) -> Req:
    return await _patient_get(ctx, "/fhir")


async def _scores_csv(ctx: Ctx) -> Req:
    return await _patient_get(ctx, "/scores.csv")


def _twilio(path: str) -> Make:
    async def make(ctx: Ctx) -> list[Req]:
        if path == "/twilio/sms":
            params = {
                "MessageSid": new_sid(),
                "AccountSid": "AC" + "1" * 32,
                "From": new_phone(ctx),
                "To": "+12025550199",
                "Body": "hello",
            }
        else:
            params = {"MessageSid": new_sid(), "MessageStatus": "delivered"}
        return [Req("POST", path, form=params, signed_twilio=True)]

    return make


async def _page_escalation(ctx: Ctx) -> Req:
    return Req("GET", f"/escalations/{await escalation(ctx)}")


async def _page_claim(ctx: Ctx) -> Req:
    return Req("POST", f"/escalations/{await escalation(ctx)}/claim", form={})


async def _page_release(ctx: Ctx) -> Req:
    return Req("POST", f"/escalations/{await escalation(ctx, claimed_by=ctx.me)}/release", form={})


async def _page_resolve(ctx: Ctx) -> Req:
    form = {"disposition": "left_message", "note": "voicemail"}
    return Req("POST", f"/escalations/{await escalation(ctx)}/resolve", form=form)


async def _page_patient(ctx: Ctx) -> Req:
    return Req("GET", f"/patients/{await patient(ctx)}")


async def _page_create(ctx: Ctx) -> Req:
    return Req("POST", "/patients", form=patient_form(ctx))


async def _page_edit(ctx: Ctx) -> Req:
    return Req("GET", f"/patients/{await patient(ctx)}/edit")


async def _page_update(ctx: Ctx) -> Req:
    return Req("POST", f"/patients/{await patient(ctx)}/edit", form=patient_form(ctx))


async def _page_treatment(ctx: Ctx) -> Req:
    form = {"kind": "ketamine infusion", "administered_at": "2026-03-01T09:00"}
    return Req("POST", f"/patients/{await patient(ctx)}/treatments", form=form)


async def _treatment(ctx: Ctx) -> tuple[int, int]:
    pid = await patient(ctx)
    async with ctx.h.db.write() as s:
        t = Treatment(patient_id=pid, kind="ketamine infusion", administered_at=START)
        s.add(t)
        await s.flush()
        return pid, t.id


async def _page_treatment_change(ctx: Ctx) -> Req:
    pid, tid = await _treatment(ctx)
    form = {"kind": "esketamine", "administered_at": "2026-03-01T09:00"}
    return Req("POST", f"/patients/{pid}/treatments/{tid}", form=form)


async def _page_treatment_delete(ctx: Ctx) -> Req:
    pid, tid = await _treatment(ctx)
    return Req("POST", f"/patients/{pid}/treatments/{tid}/delete", form={})


async def _page_patient_text(ctx: Ctx) -> Req:
    return Req("POST", f"/patients/{await patient(ctx)}/messages", form={"body": "Hello"})


async def _page_assign(ctx: Ctx) -> Req:
    form = {"user_id": str(ctx.ids["admin"])}
    held = await escalation(ctx, claimed_by=ctx.me)  # the holder hands it on
    return Req("POST", f"/escalations/{held}/assign", form=form)


async def _page_take_over(ctx: Ctx) -> Req:
    return Req("POST", f"/escalations/{await escalation(ctx)}/take-over", form={})


async def _page_escalation_text(ctx: Ctx) -> Req:
    return Req("POST", f"/escalations/{await escalation(ctx)}/text", form={"body": "Hello"})


async def _page_checkin(ctx: Ctx) -> Req:
    return Req("POST", f"/patients/{await patient(ctx)}/checkins", form={"flow": "phq9"})


async def _page_enroll(ctx: Ctx) -> Req:
    form = {"protocol": "ketamine_induction"}
    return Req("POST", f"/patients/{await patient(ctx)}/enrollments", form=form)


async def _page_status(ctx: Ctx) -> Req:
    return Req("POST", f"/patients/{await patient(ctx)}/status", form={"status": "paused"})


async def _page_editor_post(ctx: Ctx) -> Req:
    form = {"action": "validate", "source": library.flow_sources()["daily_mood"]}
    return Req("POST", "/admin/flows/daily_mood", form=form)


async def _page_upload(ctx: Ctx) -> Req:
    source = library.flow_sources()["daily_mood"].encode()
    return Req("POST", "/admin/flows/daily_mood/upload", upload=("daily_mood.yaml", source))


async def _page_version_action(ctx: Ctx) -> Req:
    return Req("POST", f"/admin/flows/{await draft(ctx)}/discard", form={})


async def _fresh_user(ctx: Ctx) -> int:
    email = await ctx.h.user(Role.CLINICIAN)
    async with ctx.h.db.read() as s:
        found = await s.scalar(select(User.id).where(User.email == email))
    assert found is not None
    return found


async def _page_user_create(ctx: Ctx) -> Req:
    form = {
        "email": f"{ctx.unique('made')}@example.org",
        "role": "clinician",
        "password": "amber walrus lantern 7",
    }
    return Req("POST", "/admin/users", form=form)


def _page_user_action(action: str, **form: str) -> Make:
    async def make(ctx: Ctx) -> list[Req]:
        return [Req("POST", f"/admin/users/{await _fresh_user(ctx)}/{action}", form=form)]

    return make


async def _page_user_password(ctx: Ctx) -> Req:
    form = {"password": "amber walrus lantern 7"}
    return Req("POST", f"/admin/users/{await _fresh_user(ctx)}/password", form=form)


async def _page_token_revoke(ctx: Ctx) -> Req:
    email = await ctx.h.user(Role.CLINICIAN)
    async with ctx.h.db.write() as s:
        user, _ = await create_token(session=s, email=email, label="r", now=ctx.h.clock.now())
        await s.flush()
        token_id = await s.scalar(select(ApiToken.id).where(ApiToken.user_id == user.id))
    return Req("POST", f"/admin/tokens/{token_id}/revoke", form={})


async def _api_assign(ctx: Ctx) -> Req:
    body = {"user_id": ctx.ids["admin"]}
    held = await escalation(ctx, claimed_by=ctx.me)  # the holder hands it on
    return Req("POST", f"/api/v1/escalations/{held}/assign", json=body)


async def _api_text(ctx: Ctx) -> Req:
    return Req("POST", f"/api/v1/patients/{await patient(ctx)}/messages", json={"body": "Hi"})


async def _login(_ctx: Ctx) -> list[Req]:
    return [Req("POST", "/login")]  # sent by _check_login with the form's own token


CLINICIAN_DENIED = False

TABLE: dict[tuple[str, str], Rule] = {
    # health and metrics: no session or token needed
    ("GET", "/healthz"): Rule("public", fixed(Req("GET", "/healthz"))),
    ("GET", "/metrics"): Rule("metrics", fixed(Req("GET", "/metrics")), optional=True),
    # Twilio: only the signature counts, whoever else is calling
    ("POST", "/twilio/sms"): Rule("twilio", _twilio("/twilio/sms")),
    ("POST", "/twilio/status"): Rule("twilio", _twilio("/twilio/status")),
    # the API
    ("GET", "/api/v1/openapi.json"): Rule("public", fixed(Req("GET", "/api/v1/openapi.json"))),
    ("GET", "/api/v1/patients"): Rule("api", fixed(Req("GET", "/api/v1/patients"))),
    ("POST", "/api/v1/patients"): Rule("api", one(_api_patient_create), CLINICIAN_DENIED),
    ("GET", "/api/v1/patients/{id}"): Rule("api", one(_patient_get)),
    ("PATCH", "/api/v1/patients/{id}"): Rule("api", one(_api_patient_patch), CLINICIAN_DENIED),
    ("GET", "/api/v1/patients/{id}/messages"): Rule("api", one(_messages)),
    ("GET", "/api/v1/patients/{id}/checkins"): Rule("api", one(_checkins)),
    ("POST", "/api/v1/patients/{id}/checkins"): Rule("api", one(_api_checkin)),
    ("POST", "/api/v1/patients/{id}/treatments"): Rule("api", one(_api_treatment)),
    ("POST", "/api/v1/patients/{id}/enrollments"): Rule(
        "api", one(_api_enrollment), CLINICIAN_DENIED
    ),
    ("GET", "/api/v1/escalations"): Rule("api", fixed(Req("GET", "/api/v1/escalations"))),
    ("GET", "/api/v1/users"): Rule("api", fixed(Req("GET", "/api/v1/users")), CLINICIAN_DENIED),
    ("GET", "/api/v1/escalations/{id}"): Rule("api", one(_api_escalation)),
    ("POST", "/api/v1/escalations/{id}/claim"): Rule("api", one(_api_claim)),
    ("POST", "/api/v1/escalations/{id}/release"): Rule("api", one(_api_release)),
    ("POST", "/api/v1/escalations/{id}/resolve"): Rule("api", one(_api_resolve)),
    ("POST", "/api/v1/escalations/{id}/assign"): Rule("api", one(_api_assign)),
    ("POST", "/api/v1/patients/{id}/messages"): Rule("api", one(_api_text)),
    ("GET", "/api/v1/{kind}"): Rule("api", _flow_lists),
    ("GET", "/api/v1/{kind}/{key}"): Rule("api", _flow_one),
    ("GET", "/api/v1/{kind}/{key}/versions/{version}"): Rule("api", _flow_versions),
    ("PUT", "/api/v1/{kind}/{key}/draft"): Rule("api", one(_flow_put_draft), CLINICIAN_DENIED),
    ("POST", "/api/v1/{kind}/{key}/validate"): Rule("api", one(_flow_validate), CLINICIAN_DENIED),
    ("GET", "/api/v1/{kind}/{key}/diff"): Rule("api", one(_flow_diff)),
    ("POST", "/api/v1/{kind}/{key}/publish"): Rule("api", one(_flow_publish), CLINICIAN_DENIED),
    ("POST", "/api/v1/{kind}/{key}/rollback"): Rule("api", one(_flow_rollback), CLINICIAN_DENIED),
    ("POST", "/api/v1/{kind}/{key}/retire"): Rule("api", one(_flow_retire), CLINICIAN_DENIED),
    ("POST", "/api/v1/flows/{key}/simulate"): Rule("api", one(_flow_simulate)),
    # exports: a patient's FHIR record is a read (clinicians too); bulk CSV is admin-only
    ("GET", "/api/v1/patients/{id}/fhir"): Rule("api", one(_fhir_patient)),
    ("GET", "/api/v1/fhir/Questionnaire/{key}"): Rule(
        "api", fixed(Req("GET", "/api/v1/fhir/Questionnaire/phq9"))
    ),
    ("GET", "/api/v1/patients/{id}/scores.csv"): Rule("api", one(_scores_csv), CLINICIAN_DENIED),
    ("GET", "/api/v1/exports/escalations.csv"): Rule(
        "api",
        fixed(
            Req("GET", "/api/v1/exports/escalations.csv"),
            Req("GET", "/api/v1/exports/escalations.csv?from=2026-01-01&to=2026-12-31"),
        ),
        CLINICIAN_DENIED,
    ),
    # signing in and out
    ("GET", "/login"): Rule("public", fixed(Req("GET", "/login"))),
    ("POST", "/login"): Rule("login", _login),
    ("POST", "/logout"): Rule("logout", fixed(Req("POST", "/logout", form={}))),
    # clinician pages
    ("GET", "/"): Rule("page", fixed(Req("GET", "/"))),
    ("GET", "/queue/rows"): Rule("page", fixed(Req("GET", "/queue/rows"))),
    ("GET", "/escalations/{id}"): Rule("page", one(_page_escalation)),
    ("POST", "/escalations/{id}/claim"): Rule("page", one(_page_claim)),
    ("POST", "/escalations/{id}/release"): Rule("page", one(_page_release)),
    ("POST", "/escalations/{id}/resolve"): Rule("page", one(_page_resolve)),
    ("POST", "/escalations/{id}/assign"): Rule("page", one(_page_assign)),
    ("POST", "/escalations/{id}/take-over"): Rule("page", one(_page_take_over)),
    ("POST", "/escalations/{id}/text"): Rule("page", one(_page_escalation_text)),
    ("GET", "/patients"): Rule(
        "page", fixed(Req("GET", "/patients"), Req("GET", "/patients?q=Pat"))
    ),
    ("GET", "/patients/{id}"): Rule("page", one(_page_patient)),
    ("POST", "/patients/{id}/treatments"): Rule("page", one(_page_treatment)),
    ("POST", "/patients/{id}/treatments/{treatment_id}"): Rule("page", one(_page_treatment_change)),
    ("POST", "/patients/{id}/treatments/{treatment_id}/delete"): Rule(
        "page", one(_page_treatment_delete)
    ),
    ("POST", "/patients/{id}/messages"): Rule("page", one(_page_patient_text)),
    ("POST", "/patients/{id}/checkins"): Rule("page", one(_page_checkin)),
    # the idle warning's "Stay signed in": any signed-in user, CSRF-checked like any form
    ("POST", "/session/keepalive"): Rule("page", fixed(Req("POST", "/session/keepalive", form={}))),
    # admin pages
    ("GET", "/patients/new"): Rule("page", fixed(Req("GET", "/patients/new")), CLINICIAN_DENIED),
    ("POST", "/patients"): Rule("page", one(_page_create), CLINICIAN_DENIED),
    ("GET", "/patients/{id}/edit"): Rule("page", one(_page_edit), CLINICIAN_DENIED),
    ("POST", "/patients/{id}/edit"): Rule("page", one(_page_update), CLINICIAN_DENIED),
    ("POST", "/patients/{id}/enrollments"): Rule("page", one(_page_enroll), CLINICIAN_DENIED),
    ("POST", "/patients/{id}/status"): Rule("page", one(_page_status), CLINICIAN_DENIED),
    ("GET", "/admin/audit"): Rule(
        "page",
        fixed(Req("GET", "/admin/audit"), Req("GET", "/admin/audit?action=login&subject=user")),
        CLINICIAN_DENIED,
    ),
    ("GET", "/admin/flows"): Rule("page", fixed(Req("GET", "/admin/flows")), CLINICIAN_DENIED),
    ("GET", "/admin/users"): Rule("page", fixed(Req("GET", "/admin/users")), CLINICIAN_DENIED),
    ("POST", "/admin/users"): Rule("page", one(_page_user_create), CLINICIAN_DENIED),
    ("POST", "/admin/users/{id}/deactivate"): Rule(
        "page", _page_user_action("deactivate"), CLINICIAN_DENIED
    ),
    ("POST", "/admin/users/{id}/reactivate"): Rule(
        "page", _page_user_action("reactivate"), CLINICIAN_DENIED
    ),
    ("POST", "/admin/users/{id}/unlock"): Rule(
        "page", _page_user_action("unlock"), CLINICIAN_DENIED
    ),
    ("POST", "/admin/users/{id}/role"): Rule(
        "page", _page_user_action("role", role="admin"), CLINICIAN_DENIED
    ),
    ("POST", "/admin/users/{id}/on-call"): Rule(
        "page", _page_user_action("on-call", phone="+12025550177", on_call="on"), CLINICIAN_DENIED
    ),
    ("POST", "/admin/users/{id}/password"): Rule(
        "page", one(_page_user_password), CLINICIAN_DENIED
    ),
    ("POST", "/admin/tokens/{id}/revoke"): Rule("page", one(_page_token_revoke), CLINICIAN_DENIED),
    ("GET", "/admin/flows/new"): Rule(
        "page",
        fixed(Req("GET", "/admin/flows/new"), Req("GET", "/admin/flows/new?key=matrix_new")),
        CLINICIAN_DENIED,
    ),
    ("GET", "/admin/{kind}/{key}"): Rule(
        "page",
        fixed(Req("GET", "/admin/flows/phq9"), Req("GET", "/admin/protocols/ketamine_induction")),
        CLINICIAN_DENIED,
    ),
    ("POST", "/admin/{kind}/{key}"): Rule("page", one(_page_editor_post), CLINICIAN_DENIED),
    ("POST", "/admin/{kind}/{key}/upload"): Rule("page", one(_page_upload), CLINICIAN_DENIED),
    ("POST", "/admin/{kind}/{key}/{action}"): Rule(
        "page", one(_page_version_action), CLINICIAN_DENIED
    ),
}


def registered(h: Harness) -> set[tuple[str, str]]:
    out = set()
    for route in h.app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if route.method == "HEAD" or canonical.startswith("/static"):
            continue
        out.add((route.method, canonical))
    return out


# -- sending and judging ---------------------------------------------------------------------


async def send(ctx: Ctx, req: Req, *, token: str | None = None) -> ClientResponse:
    h = ctx.h
    headers: dict[str, str] = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    kw: dict[str, Any] = {"allow_redirects": False, "headers": headers}
    if req.json is not None:
        kw["json"] = req.json
    elif req.body is not None:
        kw["data"] = req.body
        headers["Content-Type"] = "application/yaml"
    elif req.upload is not None:
        form = FormData()
        form.add_field("csrf_token", ctx.csrf)
        name, content = req.upload
        form.add_field("file", content, filename=name, content_type="application/yaml")
        kw["data"] = form
    elif req.form is not None:
        if req.signed_twilio:
            return await h.post_form(req.path, req.form)
        data = dict(req.form)
        if ctx.csrf:
            data["csrf_token"] = ctx.csrf
        kw["data"] = data
    return await h.client.request(req.method, req.path, **kw)


async def assert_api_error(resp: ClientResponse, status: int, code: str) -> None:
    assert resp.status == status, (resp.method, resp.url.path, resp.status, await resp.text())
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def assert_allowed(resp: ClientResponse, what: str) -> None:
    text = await resp.text()
    assert 200 <= resp.status < 400, (what, resp.status, text[:500])
    if resp.status >= 300:
        location = resp.headers["Location"]
        assert not location.startswith("/login"), (what, location)
        assert "error=" not in location, (what, location)


def assert_to_login(resp: ClientResponse, req: Req) -> None:
    assert resp.status == 303, (req, resp.status)
    location = resp.headers["Location"]
    assert location.startswith("/login?next="), (req, location)


async def sign_in(ctx: Ctx, role: RoleName) -> None:
    ctx.h.client.session.cookie_jar.clear()
    ctx.role = role
    ctx.csrf = ""
    if role != "anon":
        resp = await ctx.h.login(ctx.emails[role])
        assert resp.status == 303
        ctx.csrf = await ctx.h.csrf()


async def check(ctx: Ctx, key: tuple[str, str], rule: Rule) -> None:
    role = ctx.role
    what = f"{role} {key[0]} {key[1]}"
    for req in await rule.make(ctx):
        if rule.kind == "api":
            if role == "anon":
                resp = await send(ctx, req)
                await assert_api_error(resp, 401, "unauthorized")
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
                resp = await send(ctx, req, token="act_not-a-real-token")
                await assert_api_error(resp, 401, "unauthorized")
                continue
            resp = await send(ctx, req, token=ctx.tokens[role])
            if role == "admin" or rule.clinician:
                assert resp.status < 300, (what, req, resp.status, await resp.text())
                assert resp.status >= 200
            else:
                await assert_api_error(resp, 403, "forbidden")
        elif rule.kind == "page":
            resp = await send(ctx, req)
            if role == "anon":
                assert_to_login(resp, req)
            elif role == "admin" or rule.clinician:
                await assert_allowed(resp, what)
                assert resp.headers.get("Cache-Control") == "no-store", what
            else:
                assert resp.status == 403, (what, resp.status)
        elif rule.kind in ("public", "metrics"):
            # the same for everyone, with or without a session or token
            token = ctx.tokens.get(role)
            resp = await send(ctx, req, token=token)
            assert resp.status == 200, (what, resp.status, await resp.text())
        elif rule.kind == "twilio":
            # unsigned: refused whoever sends it (a session or API token is no substitute)
            unsigned = Req(req.method, req.path, form=req.form)
            resp = await send(ctx, unsigned, token=ctx.tokens.get(role))
            assert resp.status == 403, (what, resp.status)
            resp = await send(ctx, req)
            assert resp.status == 200, (what, resp.status, await resp.text())
            assert "<Response" in await resp.text()
        elif rule.kind == "login":
            resp = await ctx.h.login(ctx.emails["clinician" if role == "anon" else role])
            assert resp.status == 303 and resp.headers["Location"] == "/", what
            await sign_in(ctx, role)  # back to the role's own session (or none)
        elif rule.kind == "logout":
            resp = await send(ctx, req)
            assert resp.status == 303, (what, resp.status)
            assert resp.headers["Location"].startswith("/login"), what
            if role != "anon":
                assert (await ctx.h.client.get("/", allow_redirects=False)).status == 303
                await sign_in(ctx, role)
        else:  # pragma: no cover
            raise AssertionError(f"unknown kind {rule.kind}")


# -- the tests -------------------------------------------------------------------------------


async def test_every_route_is_in_the_table(h: Harness) -> None:
    routes = registered(h)
    missing = sorted(routes - set(TABLE))
    assert not missing, (
        "routes without an authorization expectation (add them to TABLE in "
        f"tests/web/test_authz_matrix.py): {missing}"
    )
    stale = sorted(k for k, rule in TABLE.items() if k not in routes and not rule.optional)
    assert not stale, f"TABLE lists routes the app does not register: {stale}"


@pytest.mark.parametrize("role", ROLES)
async def test_role_route_matrix(h: Harness, role: RoleName) -> None:
    ctx = await _setup_users(h)
    await sign_in(ctx, role)
    routes = registered(h)
    unchecked = routes - set(TABLE)
    assert not unchecked, f"routes missing from TABLE: {sorted(unchecked)}"
    failures: list[str] = []
    for key in sorted(routes):
        try:
            await check(ctx, key, TABLE[key])
        except AssertionError as exc:  # report every wrong route at once, not just the first
            failures.append(f"{role} {key[0]} {key[1]}: {exc}")
            await sign_in(ctx, role)
    assert not failures, "\n".join(failures)


# -- IDOR: guessing ids ----------------------------------------------------------------------


def _with_id(path: str, value: str) -> str:
    return path.replace("{id}", value)


ID_GUESSES = [str(UNKNOWN_ID), "0", "abc", "-1", "1e3", "9" * 30]


@pytest.mark.parametrize("role", ["clinician", "admin"])
async def test_unknown_ids_are_404_and_leak_nothing(h: Harness, role: RoleName) -> None:
    ctx = await _setup_users(h)
    # someone else's rows that a wrong lookup could leak
    other = await h.patient("Zelda", phone="+12025557777")
    await escalation(ctx)
    await sign_in(ctx, role)
    for method, canonical in sorted(registered(h)):
        if "{id}" not in canonical:
            continue
        rule = TABLE[(method, canonical)]
        allowed = role == "admin" or rule.clinician
        reqs = await rule.make(ctx)
        template = reqs[0]
        for guess in ID_GUESSES:
            req = Req(
                method,
                _with_id(canonical, guess),
                json=template.json,
                form=template.form,
                body=template.body,
            )
            what = f"{role} {method} {req.path}"
            if rule.kind == "api":
                resp = await send(ctx, req, token=ctx.tokens[role])
                if allowed:
                    await assert_api_error(resp, 404, "not_found")
                else:  # the role check comes first: no oracle for which ids exist
                    await assert_api_error(resp, 403, "forbidden")
            else:
                resp = await send(ctx, req)
                assert resp.status == (404 if allowed else 403), (what, resp.status)
            text = await resp.text()
            assert "Zelda" not in text and other.phone not in text, what
            assert "Traceback" not in text, what


async def test_clinician_cannot_resolve_or_release_another_clinicians_claim(h: Harness) -> None:
    ctx = await _setup_users(h)
    other_email = await h.user(Role.CLINICIAN)
    async with h.db.read() as s:
        other_id = await s.scalar(select(User.id).where(User.email == other_email))
    assert other_id is not None
    eid = await escalation(ctx, claimed_by=other_id)
    resolve = Req("POST", f"/api/v1/escalations/{eid}/resolve", json={"disposition": "other"})
    resp = await send(ctx, resolve, token=ctx.tokens["clinician"])
    await assert_api_error(resp, 409, "already_claimed")
    resp = await send(
        ctx, Req("POST", f"/api/v1/escalations/{eid}/claim"), token=ctx.tokens["clinician"]
    )
    await assert_api_error(resp, 409, "already_claimed")
    resp = await send(
        ctx, Req("POST", f"/api/v1/escalations/{eid}/release"), token=ctx.tokens["clinician"]
    )
    await assert_api_error(resp, 403, "forbidden")
    async with h.db.read() as s:
        found = await s.get(Escalation, eid)
        assert found is not None
        assert found.status is EscalationStatus.CLAIMED and found.claimed_by == other_id
    # the same through the pages: refused, nothing changes
    await sign_in(ctx, "clinician")
    for action in ("resolve", "release"):
        form = {"disposition": "other", "note": "taking over"}
        resp = await send(ctx, Req("POST", f"/escalations/{eid}/{action}", form=form))
        assert resp.status == 303 and "error=" in resp.headers["Location"], action
    async with h.db.read() as s:
        found = await s.get(Escalation, eid)
        assert found is not None and found.status is EscalationStatus.CLAIMED
    # an admin can
    resp = await send(ctx, resolve, token=ctx.tokens["admin"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "resolved" and body["resolved_by"] == ctx.ids["admin"]


async def test_patient_ids_in_forms_cannot_redirect_a_change_elsewhere(h: Harness) -> None:
    """The patient is the one in the path; a smuggled ``id``/``patient_id`` field is ignored."""
    ctx = await _setup_users(h)
    target = await patient(ctx)
    victim = await patient(ctx)
    await sign_in(ctx, "admin")
    form = {**patient_form(ctx), "id": str(victim), "patient_id": str(victim)}
    resp = await send(ctx, Req("POST", f"/patients/{target}/edit", form=form))
    assert resp.status == 303
    async with h.db.read() as s:
        changed = await s.get(Patient, target)
        untouched = await s.get(Patient, victim)
    assert changed is not None and changed.first_name == form["first_name"]
    assert untouched is not None and untouched.first_name.startswith("Pat")


def test_the_table_is_explicit_about_admin_only_pages() -> None:
    admin_only = {k for k, r in TABLE.items() if r.kind == "page" and not r.clinician}
    for method, path in TABLE:
        if path.startswith("/admin/"):
            assert (method, path) in admin_only, path
    assert {
        ("GET", "/patients/new"),
        ("POST", "/patients"),
        ("GET", "/patients/{id}/edit"),
        ("POST", "/patients/{id}/edit"),
        ("POST", "/patients/{id}/enrollments"),
        ("POST", "/patients/{id}/status"),
    } <= admin_only


async def test_a_session_cookie_alone_never_authenticates_the_api(h: Harness) -> None:
    """The API takes bearer tokens only, so a signed-in browser cannot be used for CSRF on it."""
    ctx = await _setup_users(h)
    await sign_in(ctx, "admin")
    for method, canonical in sorted(registered(h)):
        rule = TABLE[(method, canonical)]
        if rule.kind != "api":
            continue
        for req in await rule.make(ctx):
            await assert_api_error(await send(ctx, req), 401, "unauthorized")
