"""Inbound webhook throughput: the real server, signed Twilio webhooks, a whole PHQ-9 each.

For each backend (SQLite, then PostgreSQL) this creates and migrates a fresh
database, seeds N patients with an active PHQ-9 check-in, starts the real
server (``python -m bot serve``, console transport, signatures on) as a
separate process and drives every patient through the nine questions with
correctly signed ``POST /twilio/sms`` requests over loopback: one patient's
replies strictly in order, different patients concurrently, at a fixed
concurrency. Replies mix digits, labels, synonyms and number words, with some
unparseable ones that are re-asked. It prints messages/s and p50/p99/max
latency, the server's CPU per message, how busy the whole machine was and what
the rest of it (the database server, the kernel) spent per message, then the
rate of a bare aiohttp handler that only parses the form (the ceiling on this
machine, same client, same concurrency) and the ratio,
then checks the database: every answer recorded exactly once, every expected
escalation present, no 5xx. Run:

    .venv/bin/python bench/inbound.py [--patients 300] [--concurrency 16]
        [--backend sqlite|postgres|both] [--client raw|aiohttp]
        [--profile [cprofile|pyinstrument]]

The load generator shares the machine with the server and the database: by default
(``raw``) it writes each pre-signed request's bytes on keep-alive connections and
reads the response by its Content-Length, which costs it a fraction of what
aiohttp's client (``aiohttp``) costs.

PostgreSQL: ``BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) is used only to create and drop
``aftercare_bench_<pid>``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the standard library's queue module for scripts run from here
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlencode, urlsplit  # noqa: E402

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

SELF = Path(__file__).resolve()
ROOT = SELF.parent.parent
sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds, machine_busy_seconds, scratch_database  # noqa: E402

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
ACCOUNT_SID = "AC" + "5" * 32
OUR_NUMBER = "+12025550199"
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
TARGET_RATE = 1000.0
BARE_MIN_MESSAGES = 20_000
TARGET_P99_MS = 50.0

# Replies per answer value: digits, labels, synonyms, number words, a little punctuation/emoji.
FORMS: dict[int, tuple[str, ...]] = {
    0: ("0", "0", "0.", "#0", "not at all", "Never", "zero", "none"),
    1: ("1", "1", "1.", "#1", "several days", "Several days", "sometimes", "one 👍"),
    2: ("2", "2", "2.", "more than half the days", "More than half the days!", "most days", "two"),
    3: ("3", "3", "3!", "nearly every day", "Nearly every day!", "every day", "three"),
}
# Unparseable: re-asked with a hint, no answer recorded (at most one per question here).
BAD = ("maybe", "2 or 3", "7", "idk", "what?", "not sure tbh")
BAD_RATE = 0.08


# -- scripts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Script:
    phone: str
    values: tuple[int, ...]
    replies: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.values)

    @property
    def expected(self) -> frozenset[str]:
        """PHQ-9 rules for a patient without history (flows/library/phq9.yaml)."""
        reasons = set()
        if self.total >= 20:
            reasons.add("phq9_severe")
        elif self.total >= 15:
            reasons.add("phq9_moderately_severe")
        if self.values[8] > 0:
            reasons.add("item9_positive")
        return frozenset(reasons)


def _phone(i: int) -> str:
    areas = ("202", "212", "312", "415", "617", "303", "206", "512")
    return f"+1{areas[i // 10_000]}555{i % 10_000:04d}"


def make_scripts(count: int, seed: int) -> list[Script]:
    """Severe, moderately severe, item-9-positive and low-scoring patients in a fixed mix."""
    rng = random.Random(seed)
    profiles = (
        # (weight, values for q1-q8, values for q9)
        (0.20, (2, 3), (0, 1, 2)),  # high: total 16-27, usually severe
        (0.15, (1, 2), (0, 0, 1)),  # middling: some moderately severe
        (0.10, (0, 1), (1, 2)),  # low total but item 9 positive
        (0.55, (0, 1), (0,)),  # low: no escalation
    )
    weights = [p[0] for p in profiles]
    scripts = []
    for i in range(count):
        _w, items, item9 = rng.choices(profiles, weights)[0]
        values = tuple([rng.choice(items) for _ in range(8)] + [rng.choice(item9)])
        replies: list[str] = []
        for value in values:
            if rng.random() < BAD_RATE:
                replies.append(rng.choice(BAD))
            replies.append(rng.choice(FORMS[value]))
        scripts.append(Script(_phone(i), values, tuple(replies)))
    return scripts


def check_scripts(scripts: Sequence[Script]) -> None:
    """Each reply means what the script says in the shipped PHQ-9 (pure engine, no I/O)."""
    from bot.library import flow_sources
    from flows.definition import load_flow
    from flows.engine import AnswerRecorded, Context, Reply, resume, start

    flow = load_flow(flow_sources()["phq9"])
    now = datetime.now(UTC)
    for script in scripts:
        step = start(flow, Context("Ana"), now)
        got: list[int] = []
        for text in script.replies:
            step = resume(flow, step.state, Reply(text), now)
            got += [int(e.value) for e in step.events if isinstance(e, AnswerRecorded)]  # type: ignore[arg-type]
        if tuple(got) != script.values or step.state.active:
            raise SystemExit(f"bad script {script.replies}: engine read {got}")


# -- requests ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    body: bytes
    headers: dict[str, str]


def twilio_params(phone: str, body: str) -> dict[str, str]:
    """The fields Twilio posts for an inbound SMS (all of them are signed)."""
    sid = "SM" + secrets.token_hex(16)
    return {
        "ToCountry": "US",
        "ToState": "DC",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "WASHINGTON",
        "FromZip": "20001",
        "SmsSid": sid,
        "FromState": "DC",
        "SmsStatus": "received",
        "FromCity": "WASHINGTON",
        "Body": body,
        "FromCountry": "US",
        "To": OUR_NUMBER,
        "ToZip": "20001",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": phone,
        "ApiVersion": "2010-04-01",
    }


def build_requests(scripts: Sequence[Script], url: str, token: str) -> list[list[Request]]:
    from bot.sms.signature import sign

    out = []
    for script in scripts:
        reqs = []
        for text in script.replies:
            params = twilio_params(script.phone, text)
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": sign(auth_token=token, url=url, params=params),
            }
            reqs.append(Request(urlencode(params).encode(), headers))
        out.append(reqs)
    return out


# -- load ------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunResult:
    wall_s: float
    latencies: list[float]
    statuses: Counter[int]
    client_cpu_s: float
    server_cpu_s: float | None
    machine_busy_s: float = 0.0  # every core, everyone: the database server included

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.count / self.wall_s

    @property
    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


async def drive(
    url: str,
    patients: Sequence[Sequence[Request]],
    concurrency: int,
    server_pid: int,
    client: str = "raw",
) -> RunResult:
    """``concurrency`` workers; each takes the next patient and sends its replies in order."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    queue = iter(patients)
    clock = time.perf_counter
    post = _raw_poster(url) if client == "raw" else _aiohttp_poster(url, concurrency)
    async with post as send:

        async def worker() -> None:
            async with send() as one:
                for requests in queue:
                    for req in requests:
                        t0 = clock()
                        status = await one(req)
                        latencies.append(clock() - t0)
                        statuses[status] += 1

        cpu0, server0, busy0 = time.process_time(), cpu_seconds(server_pid), machine_busy_seconds()
        t0 = clock()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = clock() - t0
        cpu1, server1, busy1 = time.process_time(), cpu_seconds(server_pid), machine_busy_seconds()
    server_cpu = None if server0 is None or server1 is None else server1 - server0
    return RunResult(wall, latencies, statuses, cpu1 - cpu0, server_cpu, busy1 - busy0)


Post = Callable[[Request], Awaitable[int]]


@contextlib.asynccontextmanager
async def _aiohttp_poster(
    url: str, concurrency: int
) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[Post]]]:
    """aiohttp's client: a request costs it about as much CPU as the bare server spends."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(req: Request) -> int:
            try:
                async with session.post(url, data=req.body, headers=req.headers) as resp:
                    await resp.read()
                    return resp.status
            except (aiohttp.ClientError, TimeoutError):
                return 0

        @contextlib.asynccontextmanager
        async def per_worker() -> AsyncIterator[Post]:
            yield one

        yield per_worker


@contextlib.asynccontextmanager
async def _raw_poster(
    url: str,
) -> AsyncIterator[Callable[[], contextlib.AbstractAsyncContextManager[Post]]]:
    """HTTP/1.1 keep-alive on one connection per worker, each request's bytes written as
    is and its response read by Content-Length: the load generator shares the machine's
    two cores with the server and the database, so the less it spends the less it
    disturbs what is measured."""
    parsed = urlsplit(url)
    host, port, path = parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path

    @contextlib.asynccontextmanager
    async def per_worker() -> AsyncIterator[Post]:
        conn: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def exchange(raw: bytes) -> int:
            if not conn:
                conn.append(await asyncio.open_connection(host, port))
            reader, writer = conn[0]
            writer.write(raw)
            status = int((await reader.readline()).split()[1])
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            if close:
                conn.pop()[1].close()
            return status

        async def one(req: Request) -> int:
            raw = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
                + f"Content-Length: {len(req.body)}\r\n\r\n"
            ).encode() + req.body
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    return await exchange(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError, TimeoutError):
                if conn:
                    conn.pop()[1].close()
                return 0

        try:
            yield one
        finally:
            for _reader, writer in conn:
                writer.close()

    yield per_worker


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


async def wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = f"http://127.0.0.1:{server.port}/healthz"
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {server.proc.returncode}:\n{server.log_tail()}"
                )
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(
        f"server did not become healthy in {START_TIMEOUT_S:.0f} s:\n{server.log_tail()}"
    )


@contextlib.asynccontextmanager
async def process(
    argv: list[str], env: dict[str, str], port: int, log_path: Path
) -> AsyncIterator[Server]:
    """Start a server process, wait for /healthz, stop it with SIGINT (then SIGKILL) at the end."""
    server = Server(spawn(argv, env, log_path), port, log_path)
    proc = server.proc
    try:
        await wait_healthy(server)
        yield server
    finally:
        stop(proc)


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_bare_server(port: int) -> None:
    """The ceiling: an aiohttp handler that only parses the form and answers empty TwiML."""

    async def sms(request: web.Request) -> web.Response:
        await request.post()
        return web.Response(text=TWIML_EMPTY, content_type="text/xml")

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/twilio/sms", sms)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- databases -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str


@contextlib.asynccontextmanager
async def sqlite_backend(tmp: Path) -> AsyncIterator[Backend]:
    yield Backend("sqlite", f"sqlite+aiosqlite:///{tmp / 'bench.db'}")


@contextlib.asynccontextmanager
async def postgres_backend() -> AsyncIterator[Backend]:
    async with scratch_database("aftercare_bench") as url:
        yield Backend("postgres", url)


def server_env(db_url: str, port: int, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))}
    env.update(
        DATABASE_URL=db_url,
        SMS_TRANSPORT="console",
        TWILIO_AUTH_TOKEN=token,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        SECRET_KEY=secrets.token_urlsafe(36)[:48],
        LOG_LEVEL="WARNING",
        CLINIC_NAME="Lakeside Psychiatry",
        CLINIC_PHONE="+12025550100",
    )
    return env


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")


async def seed(env: dict[str, str], scripts: Sequence[Script]) -> None:
    """Patients with an ACTIVE phq9 check-in (intro and q1 already sent), via the services."""
    from sqlalchemy import update

    from bot.services.conversations import start_checkin
    from bot.settings import load_settings
    from db.enums import CheckinStatus, Direction, MessageStatus
    from db.models import Checkin, Message, Patient
    from db.session import Database

    settings = load_settings(env)
    db = Database(settings.database_url)
    now = datetime.now(UTC)
    try:
        for lo in range(0, len(scripts), 500):
            async with db.write() as session:
                patients = [
                    Patient(
                        first_name=f"Pat{i}",
                        phone=s.phone,
                        timezone="America/New_York",
                        language="en",
                        created_at=now,
                        updated_at=now,
                    )
                    for i, s in enumerate(scripts[lo : lo + 500], lo)
                ]
                session.add_all(patients)
                await session.flush()
                checkins = [
                    Checkin(
                        patient_id=p.id,
                        flow_key="phq9",
                        status=CheckinStatus.SCHEDULED,
                        due_at=now,
                        reminder_after_s=4 * 3600,
                        expiry_after_s=24 * 3600,
                        created_at=now,
                    )
                    for p in patients
                ]
                session.add_all(checkins)
                await session.flush()
                for patient, checkin in zip(patients, checkins, strict=True):
                    await start_checkin(
                        session=session,
                        checkin=checkin,
                        patient=patient,
                        settings=settings,
                        now=now,
                    )
                    if checkin.status is not CheckinStatus.ACTIVE:
                        raise RuntimeError("seeded check-in did not start")
                # as if the first question went out before the benchmark
                await session.execute(
                    update(Message)
                    .where(Message.direction == Direction.OUT)
                    .values(status=MessageStatus.SENT, sent_at=now, attempts=1)
                )
    finally:
        await db.dispose()


async def wait_drained(db_url: str) -> float:
    """Seconds until the fast path has sent every outbound row (it runs after each response)."""
    from sqlalchemy import func, select

    from db.enums import Direction, MessageStatus
    from db.models import Message
    from db.session import Database

    db = Database(db_url)
    t0 = time.perf_counter()
    try:
        while True:
            async with db.read() as session:
                left = await session.scalar(
                    select(func.count())
                    .select_from(Message)
                    .where(
                        Message.direction == Direction.OUT,
                        Message.status.in_((MessageStatus.PENDING, MessageStatus.SENDING)),
                    )
                )
            if not left or time.perf_counter() - t0 > DRAIN_TIMEOUT_S:
                return time.perf_counter() - t0
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()


async def verify(db_url: str, scripts: Sequence[Script], sent: int) -> list[str]:
    """Every answer once, the right totals, exactly the expected escalations, outbox drained."""
    from sqlalchemy import func, select

    from db.enums import CheckinStatus, Direction, MessageStatus
    from db.models import Answer, Checkin, Escalation, Message, Patient, Score
    from db.session import Database

    problems: list[str] = []
    db = Database(db_url)
    try:
        async with db.read() as s:
            ids = {phone: pid for phone, pid in await s.execute(select(Patient.phone, Patient.id))}
            inbound = await s.scalar(
                select(func.count()).select_from(Message).where(Message.direction == Direction.IN)
            )
            if inbound != sent:
                problems.append(f"inbound rows {inbound}, requests sent {sent}")
            phq9 = select(Checkin.id).where(Checkin.flow_key == "phq9")
            answers = await s.scalar(
                select(func.count()).select_from(Answer).where(Answer.checkin_id.in_(phq9))
            )
            if answers != 9 * len(scripts):
                problems.append(f"answers {answers}, expected {9 * len(scripts)}")
            dupes = (
                await s.execute(
                    select(Answer.checkin_id, Answer.question_key)
                    .group_by(Answer.checkin_id, Answer.question_key)
                    .having(func.count() > 1)
                )
            ).all()
            if dupes:
                problems.append(f"{len(dupes)} questions answered more than once")
            completed = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.flow_key == "phq9", Checkin.status == CheckinStatus.COMPLETED)
            )
            if completed != len(scripts):
                problems.append(f"completed PHQ-9 check-ins {completed}, expected {len(scripts)}")
            totals = {
                pid: total
                for pid, total in await s.execute(
                    select(Score.patient_id, Score.total).where(Score.instrument == "phq9")
                )
            }
            reasons: dict[int, list[str]] = {}
            for pid, reason in await s.execute(select(Escalation.patient_id, Escalation.reason)):
                if pid is not None:
                    reasons.setdefault(pid, []).append(reason)
            statuses = {
                status: n
                for status, n in await s.execute(
                    select(Message.status, func.count())
                    .where(Message.direction == Direction.OUT)
                    .group_by(Message.status)
                )
            }
    finally:
        await db.dispose()
    wrong_total = wrong_escalation = 0
    for script in scripts:
        pid = ids[script.phone]
        if totals.get(pid) != script.total:
            wrong_total += 1
        got = reasons.get(pid, [])
        if sorted(got) != sorted(script.expected):
            wrong_escalation += 1
            if wrong_escalation <= 3:
                problems.append(
                    f"{script.phone}: escalations {sorted(got)}, expected {sorted(script.expected)}"
                )
    if wrong_total:
        problems.append(f"{wrong_total} patients with a wrong PHQ-9 total")
    if wrong_escalation:
        problems.append(f"{wrong_escalation} patients with wrong escalations")
    unsent = {str(k): v for k, v in statuses.items() if k is not MessageStatus.SENT}
    if unsent:
        problems.append(f"outbound rows not sent: {unsent}")
    return problems


# -- profile -----------------------------------------------------------------------------------


def profiled_argv(kind: str, out: Path, argv: list[str]) -> list[str]:
    if kind == "pyinstrument":
        return [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(out), *argv[1:]]
    return [sys.executable, "-m", "cProfile", "-o", str(out), *argv[1:]]


def print_profile(kind: str, out: Path, top: int = 25) -> None:
    if not out.exists():
        print("  (no profile written)")
        return
    if kind == "pyinstrument":
        print(out.read_text()[:12_000])
        return
    # cProfile's cumulative time is meaningless for coroutines (it adds up suspended time
    # across resumes), so only own time is shown; pyinstrument gives the call tree.
    print(f"\n  top {top} by own time (tottime):")
    pstats.Stats(str(out)).strip_dirs().sort_stats("tottime").print_stats(top)
    print(f"\n  top {top} project functions by own time:")
    pstats.Stats(str(out)).sort_stats("tottime").print_stats(r"/(bot|flows|db)/", top)


def pick_profiler(choice: str | None) -> str | None:
    if choice != "auto":
        return choice
    return "pyinstrument" if importlib.util.find_spec("pyinstrument") else "cprofile"


# -- main ------------------------------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    real: RunResult
    bare: RunResult
    drain_s: float
    problems: list[str] = field(default_factory=list)


def report(label: str, r: RunResult) -> None:
    server_cpu = (
        f", server CPU {r.server_cpu_s / r.count * 1e3:.2f} ms/msg"
        f" ({r.server_cpu_s / r.wall_s:.0%} of a core)"
        if r.server_cpu_s is not None
        else ""
    )
    print(
        f"  {label:<5} {r.count} msgs in {r.wall_s:.2f} s: {r.rate:,.0f} msg/s  "
        f"p50 {r.pct(0.50):.1f} ms  p99 {r.pct(0.99):.1f} ms  max {max(r.latencies) * 1e3:.1f} ms  "
        f"errors {r.errors} {dict(r.statuses)}{server_cpu}; client CPU {r.client_cpu_s / r.wall_s:.0%}"
    )
    if r.server_cpu_s is not None and r.machine_busy_s:
        # what neither the server nor this client used: the database server and the kernel
        rest = max(r.machine_busy_s - r.server_cpu_s - r.client_cpu_s, 0.0)
        cores = os.cpu_count() or 1
        print(
            f"        machine {r.machine_busy_s / r.wall_s / cores:.0%} busy ({cores} cores); "
            f"everything else (database server, kernel) {rest / r.count * 1e3:.2f} ms/msg"
        )


async def bench_backend(
    backend: Backend, args: argparse.Namespace, tmp: Path, profiler: str | None
) -> Figures:
    port = free_port()
    token = secrets.token_hex(16)
    env = server_env(backend.url, port, token)
    scripts = make_scripts(args.warmup + args.patients, seed=args.seed)
    check_scripts(scripts)
    public = f"http://127.0.0.1:{port}/twilio/sms"
    requests = build_requests(scripts, public, token)
    warm, timed = requests[: args.warmup], requests[args.warmup :]

    t0 = time.perf_counter()
    migrate(env)
    await seed(env, scripts)
    print(
        f"[{backend.name}] migrated and seeded {len(scripts)} patients in {time.perf_counter() - t0:.1f} s"
    )

    argv = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    profile_out = tmp / f"{backend.name}.prof"
    if profiler:
        argv = profiled_argv(profiler, profile_out, argv)
    async with process(argv, env, port, tmp / f"{backend.name}-server.log") as server:
        await drive(public, warm, args.concurrency, server.proc.pid, args.client)
        real = await drive(public, timed, args.concurrency, server.proc.pid, args.client)
        drain_s = await wait_drained(backend.url)
    if server.proc.returncode not in (0, -signal.SIGINT):
        print(f"  server exited with {server.proc.returncode}:\n{server.log_tail()}")
    report("real", real)
    print(f"        outbox drained {drain_s * 1e3:.0f} ms after the last response")

    bare_port = free_port()
    bare_argv = [sys.executable, str(SELF), "--bare-server", str(bare_port)]
    bare_url = f"http://127.0.0.1:{bare_port}/twilio/sms"
    async with process(bare_argv, dict(os.environ), bare_port, tmp / "bare.log") as bare_server:
        await drive(bare_url, warm, args.concurrency, bare_server.proc.pid, args.client)
        # the ceiling is ~10x faster: repeat the same requests so it runs long enough to measure
        repeat = max(1, -(-BARE_MIN_MESSAGES // max(1, sum(len(r) for r in timed))))
        bare = await drive(
            bare_url, timed * repeat, args.concurrency, bare_server.proc.pid, args.client
        )
    report("bare", bare)
    print(f"        ratio real/bare: {real.rate / bare.rate:.1%}")

    sent = sum(len(r) for r in requests)
    problems = await verify(backend.url, scripts, sent)
    fives = sum(n for status, n in real.statuses.items() if status >= 500)
    if fives:
        problems.append(f"{fives} responses with 5xx")
    if real.errors:
        problems.append(f"{real.errors} responses other than 200")
    expected = Counter(r for s in scripts for r in s.expected)
    print(
        f"  check: {9 * len(scripts)} answers, escalations expected {dict(expected)}: "
        + ("OK" if not problems else "FAILED")
    )
    for p in problems:
        print(f"    - {p}")
    met = real.rate >= TARGET_RATE and real.pct(0.99) <= TARGET_P99_MS
    print(
        f"  target ≥ {TARGET_RATE:,.0f} msg/s with p99 ≤ {TARGET_P99_MS:.0f} ms: "
        + ("met" if met else f"missed ({real.rate / TARGET_RATE:.0%} of the rate)")
    )
    if profiler:
        print(f"  profile ({profiler}) of the server, warm-up + timed run + drain:")
        print_profile(profiler, profile_out)
    return Figures(backend.name, real, bare, drain_s, problems)


async def main_async(args: argparse.Namespace) -> int:
    profiler = pick_profiler(args.profile)
    names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    print(
        f"{args.patients} patients × PHQ-9 (+{args.warmup} warm-up), concurrency {args.concurrency}, "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__}, {args.client} client"
        + (f", server under {profiler}" if profiler else "")
    )
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = False
    tmp = Path(tempfile.mkdtemp(prefix="aftercare-bench-"))
    try:
        figures: list[Figures] = []
        for name in names:
            ctx = sqlite_backend(tmp) if name == "sqlite" else postgres_backend()
            async with ctx as backend:
                fig = await bench_backend(backend, args, tmp, profiler)
            figures.append(fig)
            failed |= bool(fig.problems)
        print(f"\nsummary (load average now: {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        for f in figures:
            print(
                f"  {f.backend:<8} {f.real.rate:7,.0f} msg/s  p50 {f.real.pct(0.5):5.1f} ms  "
                f"p99 {f.real.pct(0.99):5.1f} ms  max {max(f.real.latencies) * 1e3:6.1f} ms  "
                f"errors {f.real.errors}  bare {f.bare.rate:7,.0f} msg/s  "
                f"ratio {f.real.rate / f.bare.rate:.1%}  db check {'OK' if not f.problems else 'FAILED'}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="the load generator: pre-serialised HTTP/1.1 on keep-alive connections (raw), "
        "or aiohttp's client, which spends about as much CPU per request as the bare server",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        choices=("auto", "cprofile", "pyinstrument"),
        help="run the server under a profiler (pyinstrument if installed) and print the top costs",
    )
    parser.add_argument(
        "--warmup", type=int, default=16, help="extra patients driven before timing"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.patients <= 70_000 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--patients must be 1-70000, --concurrency ≥ 1, --warmup ≥ 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_server:
        run_bare_server(args.bare_server)
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
