"""The real worker (``bot.server.run_worker``, the code behind ``python -m bot worker``) with
test knobs, for the crash tests. Settings come from the environment, as in production.

    python -m tests.reliability.worker_entry [--dispatch-lease S] [--outbox-lease S]
        [--interval S] [--batch N] [--concurrency N] [--crash-after-accepts N]

- ``--dispatch-lease`` / ``--outbox-lease``: shorten ``dispatch.LEASE`` / ``outbox.LEASE`` so a
  killed worker's rows come back within seconds, not minutes;
- ``--interval``: the dispatch and outbox ticks run this often (production: 5 s and 2 s);
- ``--batch``: rows per tick (production: 500) and per dispatch batch (production on
  PostgreSQL: 1,000), so a kill lands mid-stream;
- ``--concurrency``: ``OUTBOX_CONCURRENCY``, sends in flight at once (production default: 1);
- ``--crash-after-accepts N``: the process SIGKILLs itself right after the N-th message that
  Twilio accepted (the 201 is in hand) and before ``_record_success`` commits it: the one
  window in which the outbox can duplicate a message (docs/architecture.md, decision 2).

It logs ``reliability worker pid=<pid>`` when it starts; the worker then logs
``worker started with ticks``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from datetime import timedelta

from bot import ticks
from bot.server import run_worker
from bot.services import dispatch, outbox
from bot.settings import load_settings
from bot.sms.transport import SendResult
from bot.sms.twilio_transport import TwilioTransport

log = logging.getLogger("tests.reliability.worker")


def _crash_after(accepts: int) -> None:
    original = TwilioTransport.send
    seen = {"n": 0}

    async def send(self: TwilioTransport, *, to: str, body: str) -> SendResult:
        result = await original(self, to=to, body=body)
        seen["n"] += 1
        if seen["n"] >= accepts:
            # Twilio has the message; our row still says "sending" under its lease.
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    TwilioTransport.send = send  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dispatch-lease", type=float, default=None)
    parser.add_argument("--outbox-lease", type=float, default=None)
    parser.add_argument("--interval", type=float, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--crash-after-accepts", type=int, default=0)
    args = parser.parse_args()
    if args.dispatch_lease is not None:
        dispatch.LEASE = timedelta(seconds=args.dispatch_lease)
    if args.outbox_lease is not None:
        outbox.LEASE = timedelta(seconds=args.outbox_lease)
    if args.interval is not None:
        ticks.DISPATCH_INTERVAL_S = args.interval
        ticks.OUTBOX_INTERVAL_S = args.interval
    if args.batch is not None:
        ticks.BATCH = args.batch
        ticks.DISPATCH_BATCH_POSTGRES = args.batch
    if args.concurrency is not None:
        os.environ["OUTBOX_CONCURRENCY"] = str(args.concurrency)
    if args.crash_after_accepts > 0:
        _crash_after(args.crash_after_accepts)
    settings = load_settings(require_secret=False)
    print(f"reliability worker pid={os.getpid()}", flush=True)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
