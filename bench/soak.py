"""Soak: mixed load on PostgreSQL for a long time; throughput, p99 and memory every minute.

Issue #8, case 10 (not part of ``make test``). This creates and migrates a fresh
database, starts the real server (``python -m bot serve``) and the real worker
(``python -m bot worker``) as two processes with the real Twilio client pointed at a
fake Twilio served from this process, and then, for ``--minutes``:

- **dispatch**: every 5 s it schedules a batch of daily-mood check-ins due at once for
  idle patients; the worker's ticks start them and send their first question;
- **inbound**: each patient whose question reached the fake Twilio answers it with a
  signed ``POST /twilio/sms`` (the server records the answer, ends the check-in and
  sends the thanks through the outbox); the patient is idle again afterwards;
- **callbacks**: every message the fake Twilio accepted gets a signed
  ``POST /twilio/status`` ("delivered");
- **queue reads**: ``GET /api/v1/escalations`` with a clinician's API token at a steady
  rate, over a queue seeded with open escalations.

Every minute it prints requests/s per kind, check-ins started/s, p50/p99 latency of the
webhooks and of the queue reads, non-2xx answers, and the RSS of both processes (sampled
every 10 s). At the end: totals, overall p99, the RSS series and a verdict on memory
(RSS growth from minute 2 to the end within ``max(8 MB, 5%)`` for each process: flat)
and the number of ERROR records each process logged.

    .venv/bin/python bench/soak.py [--minutes 30] [--checkins-per-s 10] [--reads-per-s 5]
        [--patients 3000] [--escalations 300]

``BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``) is used to
create and drop ``aftercare_soak_<pid>``. Exit status 1 if memory grew, any request
failed or either process logged an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_SID = "AC" + "9" * 32
AUTH_TOKEN = "soak-auth-token-0123456789abcdef"
OUR_NUMBER = "+12025550199"
PASSWORD = "a-long-enough-soak-passphrase"
SAMPLE_S = 10.0
DISPATCH_EVERY_S = 5.0
REQUEST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
KINDS = ("inbound", "status", "queue")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def phone(i: int) -> str:
    areas = ("202", "212", "312", "415", "617", "303", "206", "512")
    return f"+1{areas[i // 10_000]}555{i % 10_000:04d}"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


# -- the fake Twilio -------------------------------------------------------------------------


@dataclass
class FakeTwilio:
    """Accepts every message (201, a fresh SID) and hands it to the load generator."""

    accepted: asyncio.Queue[tuple[str, str, str]] = field(default_factory=asyncio.Queue)
    count: int = 0

    async def create(self, request: web.Request) -> web.Response:
        form = dict(parse_qsl(await request.text(), keep_blank_values=True))
        sid = "SM" + uuid.uuid4().hex
        self.count += 1
        self.accepted.put_nowait((form.get("To", ""), form.get("Body", ""), sid))
        return web.json_response(
            {
                "sid": sid,
                "account_sid": request.match_info["account"],
                "to": form.get("To"),
                "from": form.get("From"),
                "body": form.get("Body"),
                "status": "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
            },
            status=201,
        )

    @contextlib.asynccontextmanager
    async def serve(self, port: int) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self.create)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


# -- processes and the database ----------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        return ""


def spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> Proc:
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "bot", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Proc(name, popen, log)


async def stop(proc: Proc) -> None:
    """SIGTERM, SIGKILL after 30 s; waits without blocking the loop (the fake Twilio in this
    process must keep answering the sends a stopping server finishes)."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        for _ in range(300):
            if proc.popen.poll() is not None:
                return
            await asyncio.sleep(0.1)
        proc.popen.kill()
        proc.popen.wait()


def app_env(db_url: str, port: int, twilio_base: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))}
    env.update(
        DATABASE_URL=db_url,
        SMS_TRANSPORT="twilio",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=OUR_NUMBER,
        TWILIO_API_BASE=twilio_base,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        HOST="127.0.0.1",
        PORT=str(port),
        SECRET_KEY=secrets.token_urlsafe(36)[:48],
        LOG_LEVEL="WARNING",
        LOG_FORMAT="json",
        CLINIC_NAME="Soak Clinic",
        CLINIC_PHONE="+12025550100",
    )
    return env


async def seed(db_url: str, patients: int, escalations: int) -> tuple[str, dict[str, int]]:
    """Patients, a clinician with an API token, open escalations: (token, {phone: id})."""
    from sqlalchemy import insert

    from bot.services.accounts import NewUser, create_token, create_user
    from bot.services.escalations import raise_escalation
    from db.enums import Role, Severity
    from db.models import Patient
    from db.session import Database

    now = datetime.now(UTC)
    db = Database(db_url)
    try:
        async with db.write() as s:
            ids = (
                await s.scalars(
                    insert(Patient).returning(Patient.id),
                    [
                        {
                            "first_name": "Pat",
                            "phone": phone(i),
                            "timezone": "UTC",
                            "language": "en",
                            "created_at": now,
                            "updated_at": now,
                        }
                        for i in range(patients)
                    ],
                )
            ).all()
            by_phone = {phone(i): pid for i, pid in enumerate(ids)}
            email = "soak@example.org"
            await create_user(
                session=s, new=NewUser(email, Role.CLINICIAN, PASSWORD, "Soak"), now=now
            )
            # moderate and low only: critical and high ones page the on-call clinician
            severities = (Severity.MODERATE, Severity.LOW)
            for i in range(escalations):
                raise_escalation(
                    session=s,
                    severity=severities[i % len(severities)],
                    reason="soak",
                    summary="Seeded for the soak's queue reads.",
                    now=now - timedelta(minutes=i),
                    patient_id=ids[i % len(ids)],
                )
        async with db.write() as s:
            _user, token = await create_token(session=s, email=email, label="soak", now=now)
        return token, by_phone
    finally:
        await db.dispose()


async def schedule(db_url: str, patient_ids: list[int]) -> None:
    from sqlalchemy import insert

    from db.enums import CheckinStatus
    from db.models import Checkin
    from db.session import Database

    now = datetime.now(UTC)
    db = Database(db_url, pool_size=1, max_overflow=0)
    try:
        async with db.write() as s:
            await s.execute(
                insert(Checkin),
                [
                    {
                        "patient_id": pid,
                        "flow_key": "daily_mood",
                        "status": CheckinStatus.SCHEDULED,
                        "due_at": now,
                        "reminder_after_s": 4 * 3600,
                        "expiry_after_s": 24 * 3600,
                        "expires_at": now + timedelta(days=1),
                        "created_at": now,
                    }
                    for pid in patient_ids
                ],
            )
    finally:
        await db.dispose()


async def started_count(db_url: str) -> int:
    from sqlalchemy import func, select

    from db.enums import CheckinStatus
    from db.models import Checkin
    from db.session import Database

    db = Database(db_url, pool_size=1, max_overflow=0)
    try:
        async with db.read() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(Checkin)
                .where(Checkin.status != CheckinStatus.SCHEDULED)
            )
        return int(n or 0)
    finally:
        await db.dispose()


# -- the load ----------------------------------------------------------------------------------


@dataclass
class Minute:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # "kind status"
    rss: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    started: int = 0


class Soak:
    def __init__(self, args: argparse.Namespace, db_url: str, base: str, token: str) -> None:
        self.args = args
        self.db_url = db_url
        self.base = base
        self.token = token
        self.minutes: list[Minute] = [Minute()]
        self.replies: asyncio.Queue[str] = asyncio.Queue()
        self.callbacks: asyncio.Queue[str] = asyncio.Queue()
        self.sids = itertools.count(1)
        self.rng = random.Random(10)

    @property
    def now(self) -> Minute:
        return self.minutes[-1]

    async def post(self, http: aiohttp.ClientSession, path: str, params: dict[str, str]) -> None:
        from bot.sms.signature import sign

        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign(auth_token=AUTH_TOKEN, url=self.base + path, params=params),
        }
        kind = "inbound" if path == "/twilio/sms" else "status"
        await self.timed(http.post(self.base + path, data=urlencode(params), headers=headers), kind)

    async def timed(self, request: object, kind: str) -> None:
        minute = self.now
        t0 = time.perf_counter()
        try:
            async with request as resp:  # type: ignore[attr-defined]
                await resp.read()
                status = str(resp.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            status = type(exc).__name__
        minute.latencies[kind].append(time.perf_counter() - t0)
        if not status.startswith("2"):
            minute.failures[f"{kind} {status}"] += 1

    async def route_twilio(self, twilio: FakeTwilio, idle: asyncio.Queue[str]) -> None:
        """Questions get an answer; everything gets a delivery callback; thanks free the patient."""
        while True:
            to, body, sid = await twilio.accepted.get()
            self.callbacks.put_nowait(sid)
            if body.startswith("Hi "):
                self.replies.put_nowait(to)
            elif body.startswith("Thank you"):
                idle.put_nowait(to)

    async def answer(self, http: aiohttp.ClientSession) -> None:
        while True:
            to = await self.replies.get()
            await asyncio.sleep(0.2)
            sid = f"SM{next(self.sids):032x}"
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": ACCOUNT_SID,
                "From": to,
                "To": OUR_NUMBER,
                "Body": str(self.rng.randint(3, 10)),
                "NumMedia": "0",
            }
            await self.post(http, "/twilio/sms", params)

    async def call_back(self, http: aiohttp.ClientSession) -> None:
        while True:
            sid = await self.callbacks.get()
            params = {"MessageSid": sid, "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID}
            await self.post(http, "/twilio/status", params)

    async def read_queue(self, http: aiohttp.ClientSession) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        period = 1 / self.args.reads_per_s
        while True:
            t0 = time.perf_counter()
            await self.timed(http.get(self.base + "/api/v1/escalations", headers=headers), "queue")
            await asyncio.sleep(max(0.0, period - (time.perf_counter() - t0)))

    async def dispatch(self, idle: asyncio.Queue[str], by_phone: dict[str, int]) -> None:
        per_batch = max(1, round(self.args.checkins_per_s * DISPATCH_EVERY_S))
        while True:
            batch: list[int] = []
            while not idle.empty() and len(batch) < per_batch:
                batch.append(by_phone[idle.get_nowait()])
            if batch:
                await schedule(self.db_url, batch)
            await asyncio.sleep(DISPATCH_EVERY_S)

    async def sample(self, procs: list[Proc]) -> None:
        while True:
            for p in procs:
                value = rss_mb(p.popen.pid)
                if value is not None:
                    self.now.rss[p.name].append(value)
            await asyncio.sleep(SAMPLE_S)


def report_minute(index: int, m: Minute, started: int) -> str:
    rates = " ".join(f"{k} {len(m.latencies[k]) / 60:5.1f}/s" for k in KINDS)
    hooks = m.latencies["inbound"] + m.latencies["status"]
    rss = " ".join(
        f"{name} {values[-1]:6.1f} MB" for name, values in sorted(m.rss.items()) if values
    )
    failures = sum(m.failures.values())
    return (
        f"minute {index:3d}: {rates}  started {started / 60:5.1f}/s  "
        f"webhooks p50 {pct(hooks, 0.5):6.1f} ms p99 {pct(hooks, 0.99):6.1f} ms  "
        f"queue p99 {pct(m.latencies['queue'], 0.99):6.1f} ms  non-2xx {failures}  RSS {rss}"
    )


async def run(args: argparse.Namespace) -> int:
    from bench.support import scratch_database

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"aftercare-soak-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    twilio = FakeTwilio()
    port = free_port()
    async with (
        scratch_database("aftercare_soak") as db_url,
        twilio.serve(free_port()) as twilio_base,
    ):
        env = app_env(db_url, port, twilio_base)
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "migrate",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(300):
            out, _ = await migrate.communicate()
        if migrate.returncode != 0:
            print(out.decode(errors="replace"), file=sys.stderr)
            return 2
        token, by_phone = await seed(db_url, args.patients, args.escalations)
        procs = [
            spawn("server", ["serve"], env, tmp / "server.log"),
            spawn("worker", ["worker"], env, tmp / "worker.log"),
        ]
        tasks: list[asyncio.Task[None]] = []
        soak = Soak(args, db_url, f"http://127.0.0.1:{port}", token)
        try:
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                connector=aiohttp.TCPConnector(limit=64),
            ) as http:
                deadline = time.monotonic() + START_TIMEOUT_S
                while True:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(soak.base + "/healthz") as r:
                            if r.status == 200:
                                break
                    if time.monotonic() > deadline or procs[0].popen.poll() is not None:
                        print(f"server did not start:\n{procs[0].tail()}", file=sys.stderr)
                        return 2
                    await asyncio.sleep(0.2)
                idle: asyncio.Queue[str] = asyncio.Queue()
                for number in by_phone:
                    idle.put_nowait(number)
                print(
                    f"soak: {args.minutes} min on PostgreSQL; server pid {procs[0].popen.pid}, "
                    f"worker pid {procs[1].popen.pid}; {args.checkins_per_s} check-ins/s, "
                    f"{args.reads_per_s} queue reads/s; logs in {tmp}",
                    flush=True,
                )
                tasks = [
                    asyncio.create_task(soak.route_twilio(twilio, idle)),
                    asyncio.create_task(soak.dispatch(idle, by_phone)),
                    asyncio.create_task(soak.sample(procs)),
                    asyncio.create_task(soak.read_queue(http)),
                    *(asyncio.create_task(soak.answer(http)) for _ in range(8)),
                    *(asyncio.create_task(soak.call_back(http)) for _ in range(8)),
                ]
                started_before = await started_count(db_url)
                for minute in range(1, args.minutes + 1):
                    await asyncio.sleep(60)
                    for p in procs:
                        if p.popen.poll() is not None:
                            print(f"{p.name} exited:\n{p.tail()}", file=sys.stderr)
                            return 2
                    started = await started_count(db_url)
                    soak.now.started = started - started_before
                    started_before = started
                    print(report_minute(minute, soak.now, soak.now.started), flush=True)
                    soak.minutes.append(Minute())
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for p in procs:
                await stop(p)
    errors = {p.name: p.log.read_text(errors="replace").count('"level": "ERROR"') for p in procs}
    return verdict(soak.minutes[:-1], twilio.count, errors)


def verdict(minutes: list[Minute], sent: int, errors: dict[str, int]) -> int:
    seconds = 60 * len(minutes)
    total = {k: sum(len(m.latencies[k]) for m in minutes) for k in KINDS}
    hooks = [x for m in minutes for k in ("inbound", "status") for x in m.latencies[k]]
    reads = [x for m in minutes for x in m.latencies["queue"]]
    failures = sum(sum(m.failures.values()) for m in minutes)
    by_kind: dict[str, int] = defaultdict(int)
    for m in minutes:
        for key, n in m.failures.items():
            by_kind[key] += n
    started = sum(m.started for m in minutes)
    print(
        "total: "
        + ", ".join(f"{k} {n} ({n / seconds:.1f}/s)" for k, n in total.items())
        + f", check-ins started {started} ({started / seconds:.1f}/s), SMS sent {sent}; "
        f"webhooks p50 {pct(hooks, 0.5):.1f} ms p99 {pct(hooks, 0.99):.1f} ms; queue reads "
        f"p50 {pct(reads, 0.5):.1f} ms p99 {pct(reads, 0.99):.1f} ms; non-2xx {failures}"
        + (f" {dict(by_kind)}" if by_kind else "")
    )
    flat = True
    for name in ("server", "worker"):
        series = [m.rss[name][-1] for m in minutes if m.rss.get(name)]
        print(f"RSS {name} (MB, end of each minute): " + " ".join(f"{v:.1f}" for v in series))
        if len(series) < 3:
            print(f"  {name}: too short to judge (needs 3 minutes or more)")
            continue
        base, end = series[1], series[-1]
        growth = end - base
        allowed = max(8.0, base * 0.05)
        ok = growth <= allowed
        flat = flat and ok
        print(
            f"  {name}: {base:.1f} MB at minute 2 -> {end:.1f} MB at minute {len(series)} "
            f"({growth:+.1f} MB, allowed {allowed:.1f}): {'flat' if ok else 'GROWING'}"
        )
    logged = sum(errors.values())
    print(
        f"verdict: memory {'flat' if flat else 'GROWING'}; "
        f"{'no failed requests' if not failures else f'{failures} failed requests'}; "
        f"ERROR records logged: {errors}"
    )
    return 0 if flat and not failures and not logged else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--checkins-per-s", type=float, default=10.0)
    parser.add_argument("--reads-per-s", type=float, default=5.0)
    parser.add_argument("--patients", type=int, default=3000)
    parser.add_argument("--escalations", type=int, default=300)
    args = parser.parse_args()
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    # bench/ itself must not shadow the standard library (bench/queue.py would be `queue`)
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.path.insert(0, str(ROOT))
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
