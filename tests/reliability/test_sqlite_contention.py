"""Case 6: the web app and a worker in two processes on one SQLite file, under load.

The run (``tests/reliability/contention_run.py``): ``python -m bot serve`` and
``python -m bot worker`` (production ticks) share one SQLite database; the worker starts
check-ins falling due throughout the run and sends their first messages while several
concurrent senders post signed webhooks: every talker's reply, every texted patient's
answer and delivery callbacks. So both processes write the same tables at once, each
through its own ``BEGIN IMMEDIATE`` writer. The load is a fixed amount of work, not a
length of time, so a slow machine does the same; the rate and the latency are measured by
``bench/sqlite_contention.py``, not asserted here.

Asserted: zero "database is locked" (in both processes' logs and in every response), no
503 ("database unavailable") and no ERROR record in either log, every request answered
200 (the client timeout, 90 s, only catches a request that never gets an answer); all the
work was done (every talker replied, every texted patient answered, callbacks went
along); afterwards every check-in due during the run started exactly once, its first
message sent, the outbox empty, and both processes exit 0 on SIGTERM.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

from tests.reliability.contention_run import TALKERS, run_contention
from tests.reliability.support import FULL

DUE = 1500 if FULL else 600  # check-ins falling due evenly over SPREAD_S
SPREAD_S = 54.0 if FULL else 14.0
LOAD_TIMEOUT_S = 600.0 if FULL else 300.0
"""Only stops a hung run (the load takes ~20 s here, ~60 s in full): not a speed limit."""


async def test_web_and_worker_processes_share_sqlite_without_database_is_locked(
    sqlite_template: Path, tmp_path: Path
) -> None:
    path = tmp_path / "shared.db"
    shutil.copy(sqlite_template, path)
    run = await run_contention(
        path, tmp_path, due=DUE, spread_s=SPREAD_S, load_timeout_s=LOAD_TIMEOUT_S
    )

    statuses = Counter(r.status for r in run.requests)
    kinds = Counter(r.kind for r in run.requests)
    bodies = [r.body for r in run.requests if r.status != 200]
    logs = run.logs
    locked = {name: text.lower().count("database is locked") for name, text in logs.items()}
    unavailable = {name: text.count("database unavailable") for name, text in logs.items()}
    errors = {name: text.count('"level": "ERROR"') for name, text in logs.items()}
    print(
        f"case 6: {len(run.requests)} webhooks ({dict(kinds)}), HTTP {dict(statuses)}; worker "
        f"started {run.started}/{DUE} check-ins; 'database is locked': {locked}; 503s logged: "
        f"{unavailable}; ERROR records: {errors}"
    )
    assert locked == {"server": 0, "worker": 0}
    assert not any("locked" in b.lower() for b in bodies)
    assert unavailable == {"server": 0, "worker": 0}
    assert errors == {"server": 0, "worker": 0}, "\n".join(
        line[:600] for text in logs.values() for line in text.splitlines() if '"ERROR"' in line
    )
    assert statuses == Counter({200: len(run.requests)}), bodies[:5]
    # all the work was done: every talker replied, every texted patient answered
    assert kinds["reply"] == TALKERS and kinds["started"] == DUE and kinds["status"] > 0
    # the worker did its part meanwhile: each due check-in started once, first message sent
    assert run.started == DUE
    assert run.firsts == dict.fromkeys(run.due, 1)
    # both shut down cleanly on SIGTERM (stop() notes in the log when it had to SIGKILL)
    assert run.exit_codes == {"server": 0, "worker": 0}, {
        name: text.splitlines()[-5:] for name, text in logs.items()
    }
