"""Case 3: PostgreSQL stopped and started under a steady stream of signed webhooks.

The run (``tests/reliability/db_restart_run.py``) sends patients' replies to the real
server from several concurrent senders while the shared cluster is stopped and started
again; it moves from phase to phase on what happened (so many 200s, so many 503s, the
cluster stopped, the cluster accepting connections), never on the clock. How long the
outage and the recovery took is measured by ``bench/db_restart.py``, not asserted here.

Asserted:

- every request got an answer, 200 or 503: never a 500, never a connection error or no
  answer at all;
- while the cluster was stopped every request got 503, and ``/healthz`` said 503;
- nothing half-written: every ``MessageSid`` answered 200 has its inbound row, exactly one
  answer (the value sent) and its reply in the outbox; none answered 503 has a row;
- the same server process (never restarted) answers 200 again by itself once the database
  is back, and ``/healthz`` says 200 again;
- nothing lost or doubled: Twilio's retries of the 503s (same ``MessageSid``) all succeed,
  and afterwards every message sent is recorded exactly once; every patient who wrote
  finished their check-in, the others are still waiting;
- no request escaped the handlers.

The cluster is always started again in a ``finally`` block, and waited for, whatever
happens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import drop_pg_database, new_pg_database, pg_url_for
from tests.reliability.db_restart_run import (
    AFTER_OK,
    DOWN_REFUSED,
    PATIENTS,
    run_restart,
)

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = new_pg_database(pg_template)
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


async def test_postgres_restart_under_webhook_load_503s_then_recovers_alone(
    pg_url: str, tmp_path: Path
) -> None:
    run = await run_restart(pg_url, tmp_path)
    outcomes = run.outcomes
    statuses = Counter(o.status for o in outcomes)
    by_phase = {
        phase: dict(Counter(o.status for o in run.in_phase(phase)))
        for phase in ("warmup", "stopping", "down", "starting", "after")
    }
    print(
        f"case 3: {len(outcomes)} webhooks: {dict(statuses)}; by phase {by_phase}; healthz "
        f"{run.health_down} while stopped, {run.health_after} after; retries of the 503s "
        f"{dict(run.retried)}"
    )

    # an answer to every request, 200 or 503 only
    assert set(statuses) <= {200, 503}, [o for o in outcomes if o.status not in (200, 503)][:5]
    # while the cluster was stopped: 503 to every request, and from the health check
    down = [o for o in run.in_phase("down") if o.finished <= run.marks["starting"]]
    assert len(down) >= DOWN_REFUSED
    assert {o.status for o in down} == {503}, [o for o in down if o.status != 503][:5]
    assert run.health_down == 503
    # nothing half-written
    state = run.before_retries
    ok = {o.sid: o for o in outcomes if o.status == 200}
    refused = {o.sid: o for o in outcomes if o.status == 503}
    assert all(sid in state.inbound for sid in ok), [s for s in ok if s not in state.inbound][:5]
    assert all(
        state.answers[state.inbound[sid]] == 1 and state.values[state.inbound[sid]] == 7
        for sid in ok
    )
    assert {o.phone for o in ok.values()} <= state.replied
    assert not [sid for sid in refused if sid in state.inbound]
    # recovered by itself: the same process answers 200 again, and says it is healthy
    assert run.same_process, run.server_log[-3000:]
    assert by_phase["after"].get(200, 0) >= AFTER_OK
    assert run.health_after[-1:] == [200], run.health_after
    # nothing lost or doubled: every retry goes through, every message recorded once
    assert run.retried == Counter({200: len(refused)})
    assert set(run.after_inbound) == {o.sid for o in outcomes}
    assert set(run.after_inbound.values()) == {1}
    # each patient who wrote finished their check-in; the others are still waiting
    assert run.open_checkins == PATIENTS - len(run.sent_phones)
    # and no request escaped the handlers (aiohttp logs those before answering 500)
    assert "Error handling request" not in run.server_log
