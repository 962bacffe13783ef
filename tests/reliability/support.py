"""Shared helpers for the reliability suite: real processes, a recording fake Twilio, seeding.

Everything listens on loopback only. Processes are started with their output in a log
file under the test's ``tmp_path`` and are always stopped by the caller's ``finally``
(:meth:`Proc.kill` / :meth:`Proc.stop`); every wait is bounded.

``RELIABILITY_FULL=1`` runs the counts of issue #8 (2,000 check-ins and 20 kills, 10,000
inbound messages); without it the CI counts are used (docs/reliability.md lists both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import func, insert, select, update

from bot.services.conversations import start_checkin
from bot.services.library_seed import seed_library
from bot.settings import load_settings
from bot.sms.signature import sign
from db.enums import CheckinStatus, Direction, MessageStatus
from db.models import Checkin, Message, Patient
from db.session import Database
from tests.fakes.twilio_server import FakeTwilio

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("RELIABILITY_FULL", "") == "1"

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "reliability-auth-token-0123456789"
OUR_NUMBER = "+12025550199"
CLINIC_PHONE = "+12025550100"
SECRET_KEY = "r" * 40
PG_VERSION_DIR = Path("/etc/postgresql")
SEND_TIMEOUT_S = "60"
"""``SMS_SEND_TIMEOUT`` for the in-process storms (cases 4 and 5): one no busy machine reaches.
Under a storm the fake Twilio, in the test's own event loop, can take seconds to answer, and a
timed-out send is (rightly) retried later, which would make exact counts depend on speed."""

_AREAS = ("202", "212", "312", "415", "617", "303", "206", "512", "718", "404")


def phone(i: int) -> str:
    """A valid, distinct US number in the fictional 555 exchange for each ``i`` < 100,000."""
    return f"+1{_AREAS[i // 10_000]}555{i % 10_000:04d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes ---------------------------------------------------------------------------------


def app_env(
    db_url: str, *, twilio_base: str | None, port: int | None = None, **extra: str
) -> dict[str, str]:
    """The environment of a ``python -m bot ...`` process: Twilio (fake) or console, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SMS_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=db_url,
        SECRET_KEY=SECRET_KEY,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        CLINIC_NAME="Test Clinic",
        CLINIC_PHONE=CLINIC_PHONE,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if port is not None:
        env["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{port}"
        env["PORT"] = str(port)
        env["HOST"] = "127.0.0.1"
    if twilio_base is not None:
        env.update(
            SMS_TRANSPORT="twilio",
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_FROM_NUMBER=OUR_NUMBER,
            TWILIO_API_BASE=twilio_base,
            SMS_SEND_TIMEOUT="5",
        )
    else:
        env["SMS_TRANSPORT"] = "console"
    env.update(extra)
    return env


class Proc:
    """A child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout`` (a hung shutdown, not a slow
        one: the note at the end of the log says so); the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                with contextlib.suppress(OSError), self.log_path.open("a") as log:
                    log.write(f"\n[test] SIGKILLed: still running {timeout:.0f} s after SIGTERM\n")
        return self.popen.returncode

    async def wait_exit(self, within: float) -> int:
        """Wait (without blocking the loop) for the process to end; its exit code."""
        deadline = time.monotonic() + within
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {within}s:\n{self.tail()}")
            await asyncio.sleep(0.02)
        return code

    async def wait_for_log(self, needle: str, within: float) -> None:
        deadline = time.monotonic() + within
        while needle not in self.log():
            if not self.alive():
                raise AssertionError(
                    f"{self.name} exited {self.popen.returncode} before logging {needle!r}:\n"
                    + self.tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log {needle!r} in {within}s:\n" + self.tail()
                )
            await asyncio.sleep(0.02)


def bot_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tests.reliability.worker_entry", *args]


async def wait_healthy(proc: Proc, port: int, within: float = 60.0) -> None:
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{proc.name} not healthy after {within}s:\n{proc.tail()}")


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, every: float = 0.1
) -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails after ``within`` seconds."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
    return time.monotonic() - started


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- the shared PostgreSQL cluster -------------------------------------------------------------


def pg_cluster() -> tuple[str, str]:
    versions = sorted(p.name for p in PG_VERSION_DIR.iterdir()) if PG_VERSION_DIR.is_dir() else []
    if not versions:
        raise AssertionError("no cluster under /etc/postgresql: pg_ctlcluster is needed")
    return versions[-1], "main"


async def _run(*argv: str, within: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(within):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"{argv[0]} timed out after {within}s"
    return proc.returncode or 0, out.decode(errors="replace")


async def pg_ctl(action: str) -> None:
    version, name = pg_cluster()
    code, out = await _run(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, name, action, within=60
    )
    if code != 0 and not (action == "start" and "already running" in out):
        raise AssertionError(f"pg_ctlcluster {action} failed ({code}): {out}")


async def pg_ready() -> bool:
    code, _ = await _run("pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q", within=10)
    return code == 0


async def pg_start_and_wait(within: float = 60.0) -> None:
    """Start the cluster (a no-op if it runs) and wait until it accepts connections."""
    if not await pg_ready():
        await pg_ctl("start")
    await wait_until(pg_ready, within, "PostgreSQL to accept connections", every=0.2)


# -- a fake Twilio that also remembers the SIDs it issued ----------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    arrived: datetime
    to: str
    body: str
    sid: str


class RecordingTwilio(FakeTwilio):
    """:class:`FakeTwilio` that also keeps, for each message it accepted (201), when the POST
    arrived and the SID it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.accepted: list[Accepted] = []

    async def start(self) -> None:
        self.server = TestServer(self.app, host="127.0.0.1", access_log=None)
        await self.server.start_server()

    async def _create_message(self, request: web.Request) -> web.Response:
        arrived = datetime.now(UTC)
        response = await super()._create_message(request)
        if response.status == 201 and response.text:
            data = json.loads(response.text)
            self.accepted.append(Accepted(arrived, data["to"], data["body"], data["sid"]))
        return response


# -- webhooks ------------------------------------------------------------------------------------


def sms_params(sid: str, sender: str, body: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }


def status_params(sid: str, status: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": ACCOUNT_SID}


@dataclass(frozen=True, slots=True)
class Signed:
    body: bytes
    headers: dict[str, str]


def signed(
    public_base: str, path: str, params: Mapping[str, str], *, auth_token: str = AUTH_TOKEN
) -> Signed:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": sign(
            auth_token=auth_token, url=public_base + path, params=dict(params)
        ),
    }
    return Signed(urlencode(dict(params)).encode(), headers)


# -- seeding and reading -----------------------------------------------------------------------


async def seed_scheduled(
    url: str,
    count: int,
    *,
    due: Callable[[int], datetime] | None = None,
    flow: str = "daily_mood",
    first: int = 0,
) -> dict[int, str]:
    """``count`` patients with one scheduled check-in each: {check-in id: phone}.

    ``due(i)`` gives the i-th one's due time (i from 0; default: a minute ago). Phones are
    ``phone(first + i)``. Seeds the library too.
    """
    now = datetime.now(UTC)
    due = due or (lambda _i: now - timedelta(minutes=1))
    db = Database(url)
    try:
        out: dict[int, str] = {}
        async with db.write() as s:
            await seed_library(session=s, now=now)
        for lo in range(first, first + count, 1000):
            hi = min(lo + 1000, first + count)
            async with db.write() as s:
                phones = [phone(i) for i in range(lo, hi)]
                patient_ids = (
                    await s.scalars(
                        insert(Patient).returning(Patient.id),
                        [
                            {
                                "first_name": "P",
                                "phone": p,
                                "timezone": "UTC",
                                "language": "en",
                                "created_at": now,
                                "updated_at": now,
                            }
                            for p in phones
                        ],
                    )
                ).all()
                by_patient = dict(zip(patient_ids, phones, strict=True))
                rows = (
                    await s.execute(
                        insert(Checkin).returning(Checkin.id, Checkin.patient_id),
                        [
                            {
                                "patient_id": pid,
                                "flow_key": flow,
                                "status": CheckinStatus.SCHEDULED,
                                "due_at": due(i - first),
                                "reminder_after_s": 4 * 3600,
                                "expiry_after_s": 24 * 3600,
                                "expires_at": due(i - first) + timedelta(days=1),
                                "created_at": now,
                            }
                            for i, pid in zip(range(lo, hi), patient_ids, strict=True)
                        ],
                    )
                ).all()
                out.update({cid: by_patient[pid] for cid, pid in rows})
        return out
    finally:
        await db.dispose()


async def seed_active(
    url: str, count: int, *, flow: str, first: int = 0, now: datetime | None = None
) -> dict[str, int]:
    """``count`` patients each in an ACTIVE check-in of ``flow`` (first question already sent):
    {phone: check-in id}. Seeds the library too."""
    now = now or datetime.now(UTC)
    settings = load_settings(
        {"DATABASE_URL": url, "CLINIC_NAME": "Test Clinic", "CLINIC_PHONE": CLINIC_PHONE},
        require_secret=False,
    )
    db = Database(url)
    out: dict[str, int] = {}
    try:
        async with db.write() as s:
            await seed_library(session=s, now=now)
        for lo in range(first, first + count, 250):
            async with db.write() as s:
                patients = [
                    Patient(
                        first_name="Pat",
                        phone=phone(i),
                        timezone="UTC",
                        language="en",
                        created_at=now,
                        updated_at=now,
                    )
                    for i in range(lo, min(lo + 250, first + count))
                ]
                s.add_all(patients)
                await s.flush()
                for p in patients:
                    c = Checkin(
                        patient_id=p.id,
                        flow_key=flow,
                        status=CheckinStatus.SCHEDULED,
                        due_at=now,
                        reminder_after_s=4 * 3600,
                        expiry_after_s=24 * 3600,
                        created_at=now,
                    )
                    s.add(c)
                    await s.flush()
                    await start_checkin(session=s, checkin=c, patient=p, settings=settings, now=now)
                    assert c.status is CheckinStatus.ACTIVE, c.status
                    out[p.phone] = c.id
                # as if the first questions went out before the test
                await s.execute(
                    update(Message)
                    .where(Message.direction == Direction.OUT, Message.status.in_(_UNSENT))
                    .values(status=MessageStatus.SENT, sent_at=now, attempts=1)
                )
        return out
    finally:
        await db.dispose()


_UNSENT = (MessageStatus.PENDING, MessageStatus.SENDING)


async def unsent_and_scheduled(db: Database) -> tuple[int, int]:
    """(outbound rows pending or sending, check-ins still scheduled)."""
    async with db.read() as s:
        unsent = await s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.direction == Direction.OUT, Message.status.in_(_UNSENT))
        )
        scheduled = await s.scalar(
            select(func.count())
            .select_from(Checkin)
            .where(Checkin.status == CheckinStatus.SCHEDULED)
        )
    return int(unsent or 0), int(scheduled or 0)
