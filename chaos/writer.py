"""A business writer for the fault suite: each transaction inserts an order row and enqueues one event.

Runs as its own process at a fixed rate over many keys until told to stop (SIGTERM). It records, as JSON lines,
how many business transactions committed and every failure with its cause, so the suite can prove that no
business write failed because Kafka was down (DB restarts do fail writes; those are counted separately).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import time
from pathlib import Path

import sqlalchemy as sa

from outbox import Event, enqueue
from outbox.errors import DatabaseUnavailableError

DDL = "CREATE TABLE IF NOT EXISTS public.chaos_order (id bigserial primary key, key text not null, n int not null)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--topics", required=True)
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--rate", type=float, default=200.0, help="business transactions per second")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--max-events", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    topics = args.topics.split(",")
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    engine = sa.create_engine(args.url, pool_pre_ping=True, pool_size=1, max_overflow=0)
    committed = failed_db = failed_other = 0
    errors: dict[str, int] = {}
    interval = 1.0 / args.rate
    next_at = time.monotonic()
    stats = Path(args.stats)
    last_dump = 0.0
    while not stop and (args.max_events == 0 or committed < args.max_events):
        next_at += interval
        key = f"k{rng.randrange(args.keys)}"
        n = rng.randrange(1_000_000)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("INSERT INTO public.chaos_order (key, n) VALUES (:k, :n)"), {"k": key, "n": n})
                enqueue(conn, Event(topic=rng.choice(topics), key=key, type="chaos.order.created",
                                    source="/chaos/writer", data={"key": key, "n": n, "pad": "x" * 200}))
            committed += 1
        except (sa.exc.OperationalError, sa.exc.InterfaceError, DatabaseUnavailableError) as exc:
            # DatabaseUnavailableError: the restart hit during enqueue's own statement, which outbox translates
            # (raise ... from the driver's OperationalError). enqueue never talks to Kafka.
            failed_db += 1
            orig = getattr(exc, "orig", None) or exc.__cause__
            name = type(orig).__name__ if orig is not None else type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            next_at = time.monotonic() + 0.2  # the database is restarting: back off a little
        except Exception as exc:  # anything else is a failure the suite must report
            failed_other += 1
            what = f"{type(exc).__name__}: {str(exc)[:120]}"
            errors[what] = errors.get(what, 0) + 1
        now = time.monotonic()
        if now - last_dump > 1.0:
            last_dump = now
            _dump(stats, committed, failed_db, failed_other, errors)
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    _dump(stats, committed, failed_db, failed_other, errors)


def _dump(path: Path, committed: int, failed_db: int, failed_other: int, errors: dict[str, int]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"committed": committed, "failed_db": failed_db, "failed_other": failed_other,
                               "errors": errors}))
    tmp.replace(path)


if __name__ == "__main__":
    main()
