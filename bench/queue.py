"""The clinician read paths at production size: the queue API and the patient page.

Creates a fresh PostgreSQL database ``aftercare_benchq_<pid>``, migrates it
(``bot.migrations.upgrade``), loads the flow library, and seeds it with asyncpg
``COPY`` (``copy_records_to_table``): ~5,000 patients, 200,000 check-ins,
1,000,000 messages, 100,000 escalations (plus their scores, treatments and
enrolments). Activity per patient is skewed (log-normal), so a few patients
have thousands of messages; everything is spread over 18 months. Almost every
escalation is resolved; a few hundred are open or claimed, across severities.

It then starts the real server (``python -m bot serve``) on a free loopback
port, creates an admin API token (``bot.services.accounts``) and a signed-in
page session (``POST /login`` with the login CSRF cookie and field), and times

- ``GET /api/v1/escalations`` (the queue API, default filters), and
- ``GET /patients/{id}`` (the patient page) for the patients with the most messages,
- ``GET /patients/{id}`` once each for thousands of other patients (a first view:
  nothing about them cached in the server),

N requests each at a fixed concurrency after a warm-up, printing p50/p99/max
and the rate. Finally it prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the exact
SQL that ``queue_rows_query``, ``conversation_view.conversation_page`` and ``history.trends`` run
(captured from SQLAlchemy). The server is stopped and the database dropped at
the end, also on error or Ctrl-C / SIGTERM. Run:

    .venv/bin/python bench/queue.py [--requests 2000] [--concurrency 8 | 1,8]
        [--patients 5000] [--messages 1000000] [--checkins 200000]
        [--escalations 100000] [--profile] [--no-explain]

For experiments, ``--keep-database`` leaves the seeded database in place and
``--database-url URL`` times an existing one (nothing created or dropped), so
a code change can be measured against the same data without reseeding.

``BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
is used only to create and drop the benchmark database.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where "queue.py" would
# shadow the standard library's queue module (imported by asyncio): drop it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import bisect
import contextlib
import itertools
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds, scratch_database  # noqa: E402

TARGET_P99_MS = 50.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
PROFILE_STOP_TIMEOUT_S = 300.0  # pyinstrument renders thousands of requests at exit
REQUEST_TIMEOUT_S = 30.0
HISTORY_DAYS = 540
ADMIN_EMAIL = "bench-admin@example.org"
ADMIN_PASSWORD = "bench-admin-passphrase-q"  # a throwaway database
CLINICIANS = 6
OPEN_ESCALATIONS = 300
CLAIMED_ESCALATIONS = 100
HEAVY_PATIENTS = 50

FLOW_MIX = (("phq9", 0.35), ("gad7", 0.25), ("daily_mood", 0.30), ("post_session", 0.10))
CHECKIN_STATUS_MIX = (("completed", 0.74), ("missed", 0.08), ("expired", 0.15), ("cancelled", 0.03))
SEVERITY_MIX = (("low", 0.40), ("moderate", 0.30), ("high", 0.25), ("critical", 0.05))
REASONS = {
    "low": ("very_low_mood",),
    "moderate": ("item9_unanswered", "phq9_moderate", "gad7_moderate"),
    "high": ("item9_positive", "phq9_severe", "gad7_severe"),
    "critical": ("crisis_language", "cssrs_positive"),
}
DISPOSITIONS = (
    "reached_patient",
    "left_message",
    "sent_to_emergency_care",
    "no_action_needed",
    "other",
)
PHQ9_BANDS = (
    (4, "minimal"),
    (9, "mild"),
    (14, "moderate"),
    (19, "moderately severe"),
    (27, "severe"),
)
GAD7_BANDS = ((4, "minimal"), (9, "mild"), (14, "moderate"), (21, "severe"))
OUT_BODIES = (
    "Hi {n}, this is Lakeside Psychiatry. Over the last 2 weeks, how often have you been "
    "bothered by little interest or pleasure in doing things? 0 Not at all, 1 Several days, "
    "2 More than half the days, 3 Nearly every day",
    "Feeling down, depressed, or hopeless? Reply 0-3.",
    "Hi {n}, how is your mood today, from 0 (worst) to 10 (best)?",
    "Lakeside Psychiatry reminder: please reply with a number from 0 to 3.",
    "Thank you, {n}. Your care team at Lakeside Psychiatry will see this. If you ever feel "
    "unsafe, call or text 988.",
)
IN_BODIES = ("0", "1", "2", "3", "several days", "most days", "7", "not at all", "ok", "2.", "#1")


def _pick(mix: Sequence[tuple[str, float]], rng: random.Random, k: int) -> list[str]:
    return rng.choices([m for m, _ in mix], [w for _, w in mix], k=k)


# -- data ----------------------------------------------------------------------------------


@dataclass
class Seeded:
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _band(value: int, bands: Sequence[tuple[int, str]]) -> str:
    return next(name for top, name in bands if value <= top)


async def seed(db_url: str, args: argparse.Namespace, now: datetime) -> Seeded:
    """Library and users through the services; the bulk through asyncpg COPY."""
    import asyncpg

    from bot.services.accounts import NewUser, create_user
    from bot.services.escalations import SLA
    from bot.services.library_seed import seed_library
    from db.enums import SEVERITY_RANK, Role, Severity
    from db.session import Database

    t0 = time.perf_counter()
    out = Seeded()
    db = Database(db_url)
    try:
        async with db.write() as session:
            await seed_library(session=session, now=now)
            user = await create_user(
                session=session,
                new=NewUser(ADMIN_EMAIL, Role.ADMIN, ADMIN_PASSWORD, "Bench Admin"),
                now=now,
            )
            password_hash = user.password_hash
    finally:
        await db.dispose()

    rng = random.Random(args.seed)
    n_pat = args.patients
    start = now - timedelta(days=HISTORY_DAYS)
    span_s = HISTORY_DAYS * 86400.0
    conn = await asyncpg.connect(_plain(db_url))
    try:
        # clinicians who claim and resolve (one argon2 hash shared: nobody signs in as them)
        clinicians = [
            (
                f"clinician{i}@example.org",
                f"Clinician {i}",
                "clinician",
                password_hash,
                False,
                True,
                now,
            )
            for i in range(CLINICIANS)
        ]
        await conn.copy_records_to_table(
            "users",
            records=clinicians,
            columns=[
                "email",
                "name",
                "role",
                "password_hash",
                "on_call",
                "active",
                "created_at",
            ],
        )
        clinician_ids = [
            r["id"] for r in await conn.fetch("SELECT id FROM users WHERE role = 'clinician'")
        ]

        # patients, with a skewed share of all activity
        weights = [rng.lognormvariate(0.0, 1.0) for _ in range(n_pat)]
        cum = list(itertools.accumulate(weights))
        zones = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
        patients = [
            (
                i + 1,
                f"Pat{i + 1}",
                f"+1{2025550000 + i}",
                zones[i % 4],
                "es" if i % 7 == 0 else "en",
                "discharged" if i % 23 == 0 else ("paused" if i % 41 == 0 else "active"),
                start + timedelta(seconds=rng.random() * span_s * 0.2),
                now,
            )
            for i in range(n_pat)
        ]
        await _copy(
            conn,
            "patients",
            patients,
            [
                "id",
                "first_name",
                "phone",
                "timezone",
                "language",
                "status",
                "created_at",
                "updated_at",
            ],
        )
        out.counts["patients"] = n_pat

        enrollments = [
            (i + 1, i + 1, "ketamine_induction", 1, patients[i][6], "active", patients[i][6])
            for i in range(n_pat)
        ]
        await _copy(
            conn,
            "enrollments",
            enrollments,
            [
                "id",
                "patient_id",
                "protocol_key",
                "protocol_version",
                "start_at",
                "status",
                "created_at",
            ],
        )
        treatments = []
        for i in range(n_pat * 4):
            pid = bisect.bisect(cum, rng.random() * cum[-1]) + 1
            at = start + timedelta(seconds=rng.random() * span_s)
            treatments.append((i + 1, pid, "ketamine_infusion", at, at))
        await _copy(
            conn,
            "treatments",
            treatments,
            ["id", "patient_id", "kind", "administered_at", "created_at"],
        )
        out.counts["treatments"] = len(treatments)

        # check-ins (and scores for the completed PHQ-9 / GAD-7 ones)
        n_chk = args.checkins
        chk_patient = [p + 1 for p in _weighted(rng, cum, n_chk)]
        chk_flow = _pick(FLOW_MIX, rng, n_chk)
        chk_status = _pick(CHECKIN_STATUS_MIX, rng, n_chk)
        chk_due = [start + timedelta(seconds=rng.random() * span_s) for _ in range(n_chk)]
        checkins = []
        scores: list[tuple[Any, ...]] = []
        by_patient: dict[int, list[int]] = {}
        for i in range(n_chk):
            cid, pid, flow, status, due = (
                i + 1,
                chk_patient[i],
                chk_flow[i],
                chk_status[i],
                chk_due[i],
            )
            by_patient.setdefault(pid, []).append(cid)
            started = due + timedelta(minutes=rng.randint(0, 90)) if status != "missed" else None
            done = started + timedelta(minutes=rng.randint(2, 40)) if started else None
            if status != "completed":
                done = None
            checkins.append(
                (
                    cid,
                    pid,
                    flow,
                    1,
                    status,
                    due,
                    4 * 3600,
                    24 * 3600,
                    started,
                    done,
                    "completed" if status == "completed" else None,
                    due - timedelta(days=1),
                )
            )
            if done is not None and flow in ("phq9", "gad7"):
                top = 27 if flow == "phq9" else 21
                total = min(top, int(rng.triangular(0, top, top * 0.35)))
                band = _band(total, PHQ9_BANDS if flow == "phq9" else GAD7_BANDS)
                scores.append(
                    (len(scores) + 1, cid, pid, flow, float(total), band, "[]", True, done)
                )
        await _copy(
            conn,
            "checkins",
            checkins,
            [
                "id",
                "patient_id",
                "flow_key",
                "flow_version",
                "status",
                "due_at",
                "reminder_after_s",
                "expiry_after_s",
                "started_at",
                "completed_at",
                "outcome",
                "created_at",
            ],
        )
        out.counts["checkins"] = n_chk
        await _copy(
            conn,
            "scores",
            scores,
            [
                "id",
                "checkin_id",
                "patient_id",
                "instrument",
                "total",
                "band",
                "flags",
                "complete",
                "created_at",
            ],
        )
        out.counts["scores"] = len(scores)

        # messages: ~90% inside a check-in (around its due time), the rest free texts
        n_msg = args.messages
        phones = [p[2] for p in patients]
        names = [p[1] for p in patients]
        messages: list[tuple[Any, ...]] = []
        for i in range(n_msg):
            if rng.random() < 0.9:
                c = checkins[rng.randrange(n_chk)]
                msg_checkin, pid = c[0], c[1]
                at = c[5] + timedelta(seconds=rng.random() * 7200)
            else:
                msg_checkin, pid = None, bisect.bisect(cum, rng.random() * cum[-1]) + 1
                at = start + timedelta(seconds=rng.random() * span_s)
            inbound = i % 2 == 1
            if inbound:
                body = rng.choice(IN_BODIES)
                row = (i + 1, pid, msg_checkin, "in", phones[pid - 1], body, "", "received")
                messages.append((*row, None, 0, None, at, at))
            else:
                body = rng.choice(OUT_BODIES).format(n=names[pid - 1])
                status = "delivered" if rng.random() < 0.97 else "undelivered"
                row = (i + 1, pid, msg_checkin, "out", phones[pid - 1], body, "question", status)
                messages.append((*row, at, 1, at, at, at))
        columns = ["id", "patient_id", "checkin_id", "direction", "phone", "body", "purpose"]
        columns += ["status", "send_after", "attempts", "sent_at", "created_at", "updated_at"]
        # provider_sid, segments and encoding: Twilio's SID for every row
        messages = [(*m, f"SM{m[0]:032x}", 2 if len(m[5]) > 160 else 1, "GSM-7") for m in messages]
        columns += ["provider_sid", "segments", "encoding"]
        await _copy(conn, "messages", messages, columns)
        out.counts["messages"] = n_msg
        del messages

        # escalations: all resolved but the most recent few hundred
        n_esc = args.escalations
        esc_patient = [p + 1 for p in _weighted(rng, cum, n_esc)]
        esc_sev = _pick(SEVERITY_MIX, rng, n_esc)
        esc_at = sorted(start + timedelta(seconds=rng.random() * span_s) for _ in range(n_esc))
        escalations = []
        unresolved = OPEN_ESCALATIONS + CLAIMED_ESCALATIONS
        for i in range(n_esc):
            pid, sev, at = esc_patient[i], esc_sev[i], esc_at[i]
            if i >= n_esc - unresolved:  # the newest: spread over the last 3 days
                at = now - timedelta(seconds=rng.random() * 3 * 86400)
            pool = by_patient.get(pid)
            esc_checkin = rng.choice(pool) if pool else None
            claimed_by = claimed_at = resolved_by = resolved_at = disposition = note = None
            position = n_esc - i
            if position > unresolved:
                status = "resolved"
                claimed_by = resolved_by = rng.choice(clinician_ids)
                claimed_at = at + timedelta(minutes=rng.randint(1, 120))
                resolved_at = claimed_at + timedelta(minutes=rng.randint(1, 240))
                disposition = rng.choice(DISPOSITIONS)
                note = "Called, patient safe; follow-up booked."
            elif position > OPEN_ESCALATIONS:
                status = "claimed"
                claimed_by = rng.choice(clinician_ids)
                claimed_at = at + timedelta(minutes=rng.randint(1, 30))
            else:
                status = "open"
            severity = Severity(sev)
            escalations.append(
                (
                    i + 1,
                    pid,
                    esc_checkin,
                    sev,
                    SEVERITY_RANK[severity],
                    rng.choice(REASONS[sev]),
                    f"{sev.capitalize()} risk on a check-in answer; see the transcript.",
                    status,
                    at + SLA[severity],
                    claimed_by,
                    claimed_at,
                    resolved_by,
                    resolved_at,
                    disposition,
                    note,
                    1 if sev in ("critical", "high") else 0,
                    at,
                )
            )
        await _copy(
            conn,
            "escalations",
            escalations,
            [
                "id",
                "patient_id",
                "checkin_id",
                "severity",
                "severity_rank",
                "reason",
                "summary",
                "status",
                "sla_due_at",
                "claimed_by",
                "claimed_at",
                "resolved_by",
                "resolved_at",
                "disposition",
                "note",
                "page_count",
                "created_at",
            ],
        )
        out.counts["escalations"] = n_esc
        out.counts["escalations open"] = OPEN_ESCALATIONS
        out.counts["escalations claimed"] = CLAIMED_ESCALATIONS

        for table in ("patients", "enrollments", "treatments", "checkins", "scores"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        for table in ("messages", "escalations"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        # as autovacuum would have long done: statistics and the visibility map
        t1 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        print(f"  VACUUM ANALYZE {time.perf_counter() - t1:5.1f} s", flush=True)
    finally:
        await conn.close()
    out.seconds = time.perf_counter() - t0
    return out


def _weighted(rng: random.Random, cum: list[float], k: int) -> list[int]:
    total = cum[-1]
    return [bisect.bisect(cum, rng.random() * total) for _ in range(k)]


async def _copy(conn: Any, table: str, records: list[tuple[Any, ...]], columns: list[str]) -> None:
    t0 = time.perf_counter()
    await conn.copy_records_to_table(table, records=records, columns=columns)
    print(f"  COPY {len(records):>9,} {table:<12} {time.perf_counter() - t0:5.1f} s", flush=True)


def _plain(db_url: str) -> str:
    return db_url.replace("postgresql+asyncpg://", "postgresql://", 1)


# -- databases and processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def server(
    db_url: str, port: int, log: Path, profile: Path | None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))}
    env.update(
        DATABASE_URL=db_url,
        SECRET_KEY=secrets.token_urlsafe(36)[:48],
        LOG_LEVEL="WARNING",
        SMS_TRANSPORT="console",
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        CLINIC_NAME="Lakeside Psychiatry",
        CLINIC_PHONE="+12025550100",
    )
    argv = ["-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if profile is not None:
        argv = ["-m", "pyinstrument", "-r", "text", "-o", str(profile), *argv]
    proc = _spawn([sys.executable, *argv], env, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{_tail(log)}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not healthy in {START_TIMEOUT_S:.0f} s")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(STOP_TIMEOUT_S if profile is None else PROFILE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


async def api_token(db_url: str, now: datetime) -> str:
    from bot.services.accounts import create_token
    from db.session import Database

    db = Database(db_url)
    try:
        async with db.write() as session:
            _user, token = await create_token(
                session=session, email=ADMIN_EMAIL, label="bench", now=now
            )
    finally:
        await db.dispose()
    return token


async def sign_in(base: str) -> dict[str, str]:
    """A real page session: GET /login (CSRF cookie + field), POST /login, keep the cookie."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{base}/login") as resp:
            html = await resp.text()
        match = re.search(r'name="login_csrf" value="([^"]+)"', html)
        if match is None:
            raise RuntimeError("no login_csrf field on /login")
        form = {
            "login_csrf": match.group(1),
            "next": "/",
            "email": ADMIN_EMAIL,
            "password": ADMIN_PASSWORD,
        }
        async with http.post(f"{base}/login", data=form, allow_redirects=False) as resp:
            if resp.status != 303:
                raise RuntimeError(f"sign-in failed: {resp.status} {await resp.text()}")
        cookies = {c.key: c.value for c in jar}
    if "aftercare_session" not in cookies:
        raise RuntimeError("no session cookie after sign-in")
    return {"Cookie": f"aftercare_session={cookies['aftercare_session']}"}


# -- load ------------------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    wall_s: float
    latencies: list[float]
    statuses: Counter[int]
    server_cpu_s: float | None
    sizes: list[int]
    concurrency: int = 0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    def line(self) -> str:
        n = len(self.latencies)
        cpu = (
            f"  server CPU {self.server_cpu_s / n * 1e3:.1f} ms/req"
            if self.server_cpu_s is not None
            else ""
        )
        bad = sum(v for k, v in self.statuses.items() if k != 200)
        return (
            f"{self.label:<42} {n:5d} req {n / self.wall_s:7.1f} req/s  "
            f"p50 {self.pct(0.5):6.1f} ms  p99 {self.pct(0.99):6.1f} ms  "
            f"max {max(self.latencies) * 1e3:6.1f} ms  non-200 {bad}  "
            f"~{sum(self.sizes) / max(1, len(self.sizes)) / 1024:.0f} KiB{cpu}"
        )


async def drive(
    label: str,
    urls: Callable[[int], str],
    headers: dict[str, str],
    count: int,
    concurrency: int,
    pid: int,
) -> Run:
    latencies: list[float] = []
    sizes: list[int] = []
    statuses: Counter[int] = Counter()
    numbers = iter(range(count))
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    clock = time.perf_counter
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        async def worker() -> None:
            for i in numbers:
                t0 = clock()
                try:
                    async with http.get(urls(i), headers=headers, allow_redirects=False) as r:
                        body = await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    body, status = b"", 0
                latencies.append(clock() - t0)
                sizes.append(len(body))
                statuses[status] += 1

        cpu0 = cpu_seconds(pid)
        t0 = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = clock() - t0
        cpu1 = cpu_seconds(pid)
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return Run(label, wall, latencies, statuses, cpu, sizes)


# -- EXPLAIN ---------------------------------------------------------------------------------


async def explain(db_url: str, patient_id: int) -> None:
    """EXPLAIN ANALYZE of the statements the services really send (captured, then replayed)."""
    import asyncpg
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from bot.services import conversation_view, history, queue
    from db.session import Database

    captured: list[tuple[str, Any]] = []
    db = Database(db_url)

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        captured.append((statement, params))

    try:
        async with db.read() as session:
            event.listen(Engine, "before_cursor_execute", capture)
            try:
                captured.clear()
                query, params = queue.queue_rows_query()  # what the queue API sends
                await session.execute(query, params)
                q_sql = list(captured)
                captured.clear()
                await conversation_view.conversation_page(session=session, patient_id=patient_id)
                t_sql = list(captured)
                captured.clear()
                await history.trends(session=session, patient_id=patient_id)
                tr_sql = list(captured)
            finally:
                event.remove(Engine, "before_cursor_execute", capture)
    finally:
        await db.dispose()
    conn = await asyncpg.connect(_plain(db_url))
    try:
        for title, stmts in (
            ("queue_rows_query() (default filters)", q_sql),
            (f"conversation_page(patient {patient_id})", t_sql),
            (f"history.trends(patient {patient_id})", tr_sql),
        ):
            for statement, params in stmts:
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                args = list(params) if isinstance(params, list | tuple) else []
                plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + statement, *args)
                first = " ".join(statement.split())
                print(f"\n-- {title}: {first[:160]}{'…' if len(first) > 160 else ''}")
                for row in plan:
                    print("   " + row[0])
    finally:
        await conn.close()


# -- main ------------------------------------------------------------------------------------


async def heavy_patients(db_url: str, fresh: int) -> tuple[list[tuple[int, int]], list[int]]:
    """The patients with the most messages, and their counts; then ``fresh`` more patients
    (the next ones by messages), each to be requested once: the page with nothing cached."""
    import asyncpg

    conn = await asyncpg.connect(_plain(db_url))
    try:
        ranked = await conn.fetch(
            "SELECT patient_id, count(*) AS n FROM messages WHERE patient_id IS NOT NULL "
            "GROUP BY patient_id ORDER BY n DESC, patient_id LIMIT $1",
            HEAVY_PATIENTS + fresh,
        )
        rows, others = ranked[:HEAVY_PATIENTS], ranked[HEAVY_PATIENTS:]
        median = await conn.fetchval(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY n) FROM "
            "(SELECT count(*) AS n FROM messages GROUP BY patient_id) AS per"
        )
    finally:
        await conn.close()
    print(
        f"patients timed: the {len(rows)} with the most messages "
        f"({rows[-1]['n']:,}-{rows[0]['n']:,} each; median patient {median:,})"
    )
    if others:
        print(
            f"patients timed once each (nothing cached): {len(others):,} more "
            f"({others[-1]['n']:,}-{others[0]['n']:,} messages each)"
        )
    return [(r["patient_id"], r["n"]) for r in rows], [r["patient_id"] for r in others]


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, now: datetime) -> AsyncIterator[str]:
    """A fresh, migrated and seeded database (dropped at the end), or the one given."""
    if args.database_url:
        print(f"using the existing database {args.database_url} (not seeded, not dropped)")
        yield args.database_url
        return
    from bot.migrations import upgrade_async

    async with scratch_database("aftercare_benchq", keep=args.keep_database) as db_url:
        t0 = time.perf_counter()
        await upgrade_async(db_url)
        print(f"migrated in {time.perf_counter() - t0:.1f} s")
        seeded = await seed(db_url, args, now)
        print(
            f"seeded in {seeded.seconds:.1f} s (COPY + VACUUM ANALYZE): "
            + ", ".join(f"{v:,} {k}" for k, v in seeded.counts.items())
        )
        yield db_url


async def main_async(args: argparse.Namespace) -> int:
    print(
        f"{args.patients:,} patients, {args.checkins:,} check-ins, {args.messages:,} messages, "
        f"{args.escalations:,} escalations; {args.requests} requests per endpoint at "
        f"concurrency {', '.join(map(str, args.concurrency))}; {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}"
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    now = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="aftercare-benchq-"))
    profile = tmp / "profile.txt" if args.profile else None
    runs: list[Run] = []
    async with database(args, now) as db_url:
        warm = max(20, args.requests // 20)
        ranked, fresh = await heavy_patients(db_url, (args.requests + warm) * len(args.concurrency))
        heavy = [p for p, _ in ranked]
        token = await api_token(db_url, now)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        async with server(db_url, port, tmp / "server.log", profile) as proc:
            cookie = await sign_in(base)
            bearer = {"Authorization": f"Bearer {token}"}
            queue_url = f"{base}/api/v1/escalations"

            def queue_urls(_i: int) -> str:
                return queue_url

            def patient_urls(i: int) -> str:
                return f"{base}/patients/{heavy[i % len(heavy)]}"

            unseen = iter(fresh)

            def fresh_urls(_i: int) -> str:
                return f"{base}/patients/{next(unseen)}"

            endpoints = [
                ("GET /api/v1/escalations", queue_urls, bearer),
                ("GET /patients/{id}", patient_urls, cookie),
            ]
            if len(fresh) >= (args.requests + warm) * len(args.concurrency):
                endpoints.append(("GET /patients/{id} first view", fresh_urls, cookie))
            else:
                print("too few patients to time each page once: first views not timed")
            for _label, urls, headers in endpoints:
                await drive("warm-up", urls, headers, warm, max(args.concurrency), proc.pid)
            for concurrency in args.concurrency:
                for label, urls, headers in endpoints:
                    run = await drive(
                        f"{label} c={concurrency}",
                        urls,
                        headers,
                        args.requests,
                        concurrency,
                        proc.pid,
                    )
                    run.concurrency = concurrency
                    runs.append(run)
                    print(run.line(), flush=True)
        print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if not args.no_explain:
            await explain(db_url, heavy[0])
    if profile is not None and profile.exists():
        print("\nserver profile (pyinstrument, warm-up + timed runs):")
        print(profile.read_text()[:20_000])
    failed = False
    print(f"\ntarget p99 ≤ {TARGET_P99_MS:.0f} ms:")
    for run in runs:
        ok = run.pct(0.99) <= TARGET_P99_MS and set(run.statuses) == {200}
        failed |= not ok
        print(f"  {run.label:<42} p99 {run.pct(0.99):6.1f} ms  {'met' if ok else 'MISSED'}")
    return 1 if failed else 0


async def _guarded(args: argparse.Namespace) -> int:
    """SIGTERM cancels the run like Ctrl-C does, so the finally blocks still clean up."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await main_async(args)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=5_000)
    parser.add_argument("--checkins", type=int, default=200_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--escalations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2_000, help="timed requests per endpoint")
    parser.add_argument(
        "--concurrency",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[8],
        help="concurrent clients; a comma-separated list runs each in turn (e.g. 1,8)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="run the server under pyinstrument")
    parser.add_argument(
        "--database-url",
        help="time an existing, already seeded database instead (nothing created or dropped)",
    )
    parser.add_argument(
        "--keep-database",
        action="store_true",
        help="do not drop the seeded database (for experiments)",
    )
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    args = parser.parse_args(argv)
    if min(args.patients, args.checkins, args.messages, args.requests, *args.concurrency) < 1:
        parser.error("counts must be positive")
    if args.escalations < OPEN_ESCALATIONS + CLAIMED_ESCALATIONS:
        parser.error(f"--escalations must be ≥ {OPEN_ESCALATIONS + CLAIMED_ESCALATIONS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(_guarded(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; server stopped and database dropped")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
