"""Reconciler at scale: 10,000,000 outbox events against 10,000,000 acknowledgements, then 100 planted faults.

``python -m bench.reconcile`` (part of ``make bench``). The data is generated *inside* Postgres
(``generate_series``) in the real schema (indexes rebuilt after the bulk load), then ``outbox reconcile`` runs
as a subprocess, so its wall time and peak RSS are its own:

1. clean: must be proven (exit 0);
2. planted: 100 discrepancies spread over the id range (40 missing, 20 duplicated, 20 out of order, 10 stuck,
   10 unexpected); every one must be found and named (exit 1).

Goal (issue 5): ≤ 30 s and ≤ 300 MB for the clean run. Result: ``bench/results/reconcile.json``.
Postgres: ours (``stack.env.start_postgres``), unless ``--database-url`` names a server to use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

RESULTS = Path(__file__).resolve().parent / "results"
DB = "bench_reconcile"
GROUP = "bench"
TOPIC = "orders"
KEYS = 100_000

# Bulk load without the secondary indexes, then build them once (far faster than 10M incremental inserts).
DROP = ["ALTER TABLE outbox.event DROP CONSTRAINT uq_event_event_id", "DROP INDEX outbox.ix_event_topic_key_seq",
        "ALTER TABLE outbox.inbox DROP CONSTRAINT uq_inbox_consumer_group_event_id",
        "DROP INDEX outbox.ix_inbox_group_outbox_id", "DROP INDEX outbox.ix_inbox_group_key_order"]
CREATE = ["ALTER TABLE outbox.event ADD CONSTRAINT uq_event_event_id UNIQUE (event_id)",
          "CREATE INDEX ix_event_topic_key_seq ON outbox.event (topic, key, key_seq)",
          "ALTER TABLE outbox.inbox ADD CONSTRAINT uq_inbox_consumer_group_event_id UNIQUE (consumer_group, event_id)",
          "CREATE INDEX ix_inbox_group_outbox_id ON outbox.inbox (consumer_group, outbox_id)",
          "CREATE INDEX ix_inbox_group_key_order ON outbox.inbox (consumer_group, topic, key, id) "
          "INCLUDE (key_seq, outbox_id)"]
# Events created over the last two hours, published ~20 ms later, acknowledged ~5-40 ms after that.
EVENTS = """INSERT INTO outbox.event (id, event_id, topic, key, shard, payload, content_type, type, source, time,
  key_seq, created_at, published_at, kafka_partition, kafka_offset, relay_epoch)
SELECT g, md5(g::text)::uuid, 'orders', convert_to('k' || (g % {keys}), 'UTF8'), (g % 8)::smallint,
  '\\x7b7d'::bytea, 'application/json', 'order.created', 'urn:bench', t, g / {keys} + 1, t,
  t + interval '20 ms' + (g % 7) * interval '3 ms', ((g % {keys}) % 12)::int, g / 12, 1
FROM generate_series(1, {n}) g,
  LATERAL (SELECT now() - interval '2 hours' + g * ({span} / {n}.0) * interval '1 s') t(t)"""
ACKS = """INSERT INTO outbox.inbox (id, consumer_group, event_id, outbox_id, topic, kafka_partition, kafka_offset, key,
  key_seq, event_time, received_at, processed_at, outcome)
SELECT g, 'bench', md5(g::text)::uuid, g, 'orders', ((g % {keys}) % 12)::int, g / 12,
  convert_to('k' || (g % {keys}), 'UTF8'), g / {keys} + 1, t, t + interval '25 ms',
  t + interval '30 ms' + (g % 11) * interval '4 ms', 'processed'
FROM generate_series(1, {n}) g,
  LATERAL (SELECT now() - interval '2 hours' + g * ({span} / {n}.0) * interval '1 s') t(t)"""


def _exec(dsn: str, *sql: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        for q in sql:
            c.execute(q.encode())


def keys_for(n: int) -> int:
    """100,000 keys at 10M events (100 events per key); fewer for small runs, so every key has neighbours."""
    return max(10, min(KEYS, n // 100))


def generate(server_dsn: str, db_dsn: str, url: str, n: int) -> float:
    from alembic import command

    from migrations import alembic_config

    t = time.monotonic()
    _exec(server_dsn, f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)', f'CREATE DATABASE "{DB}"')
    command.upgrade(alembic_config(url), "heads")
    fmt = {"n": n, "keys": keys_for(n), "span": 7000}
    with psycopg.connect(db_dsn, autocommit=True) as c:
        c.execute(b"SET maintenance_work_mem = '512MB'")
        c.execute(b"SET synchronous_commit = off")
        for q in DROP:
            c.execute(q.encode())
        c.execute(EVENTS.format(**fmt).encode())
        c.execute(ACKS.format(**fmt).encode())
        c.execute(f"INSERT INTO outbox.subscription (consumer_group, topic) VALUES ('{GROUP}', '{TOPIC}')".encode())
        for q in CREATE:
            c.execute(q.encode())
        c.execute(b"SELECT setval(pg_get_serial_sequence('outbox.event', 'id'), (SELECT max(id) FROM outbox.event))")
        c.execute(b"SELECT setval(pg_get_serial_sequence('outbox.inbox', 'id'), (SELECT max(id) FROM outbox.inbox))")
        c.execute(b"VACUUM (ANALYZE) outbox.event")
        c.execute(b"VACUUM (ANALYZE) outbox.inbox")
    return time.monotonic() - t


def plant(db_dsn: str, n: int, seed: int = 5) -> dict[str, set[int]]:
    """100 discrepancies at distinct random ids; returns the outbox ids planted per kind."""
    rnd, keys = random.Random(seed), keys_for(n)
    ids: list[int] = []
    while len(ids) < 100:  # away from the edges (each key has a next seq), and no two plants touching
        cand = rnd.randrange(keys + 1, n - keys)
        if all(abs(cand - x) not in (0, keys) for x in ids):
            ids.append(cand)
    kinds = {"missing": ids[:40], "duplicated": ids[40:60], "out_of_order": ids[60:80], "stuck": ids[80:90],
             "unexpected": ids[90:]}
    with psycopg.connect(db_dsn) as c:
        c.execute(b"DELETE FROM outbox.inbox WHERE consumer_group = 'bench' AND outbox_id = ANY(%s)",
                  (kinds["missing"],))
        copies, moved = kinds["duplicated"][:10], kinds["duplicated"][10:]
        c.execute(b"INSERT INTO outbox.inbox_redelivery (consumer_group, event_id, topic, kafka_partition, "
                  b"kafka_offset) SELECT consumer_group, event_id, topic, kafka_partition, kafka_offset + 7 "
                  b"FROM outbox.inbox WHERE consumer_group = 'bench' AND outbox_id = ANY(%s)", (copies,))
        c.execute(b"UPDATE outbox.inbox SET kafka_offset = kafka_offset + 1000000000 "
                  b"WHERE consumer_group = 'bench' AND outbox_id = ANY(%s)", (moved,))
        for oid in kinds["out_of_order"]:
            # the next event of the same key was acknowledged first: swap the two acknowledgements' ids
            c.execute(b"UPDATE outbox.inbox SET id = CASE WHEN outbox_id = %(a)s THEN -%(b)s ELSE -%(a)s END "
                      b"WHERE outbox_id IN (%(a)s, %(b)s)", {"a": oid, "b": oid + keys})
            c.execute(b"UPDATE outbox.inbox SET id = -id WHERE id IN (-%(a)s, -%(b)s)", {"a": oid, "b": oid + keys})
        c.execute(b"UPDATE outbox.event SET published_at = NULL, kafka_partition = NULL, kafka_offset = NULL "
                  b"WHERE id = ANY(%s)", (kinds["stuck"],))
        c.execute(b"DELETE FROM outbox.event WHERE id = ANY(%s)", (kinds["unexpected"],))
    return {k: set(v) for k, v in kinds.items()}


def run_reconcile(url: str, out: Path) -> tuple[int, float, dict[str, Any]]:
    cmd = [sys.executable, "-c", "from relay.cli import main; main()", "reconcile", "--database-url", url,
           "--grace", "60", "--stuck-after", "300", "--format", "json", "-o", str(out), "--cap", "100"]
    t = time.monotonic()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "COLUMNS": "200"})
    took = time.monotonic() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"reconcile failed ({res.returncode}): {res.stderr[-3000:]}")
    return res.returncode, took, json.loads(out.read_text())


def found(report: dict[str, Any]) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for f in report["groups"][0]["findings"]:
        out.setdefault(f["kind"], set()).add(f["outbox_id"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--database-url", help="use this Postgres server (a database bench_reconcile is created)")
    args = ap.parse_args(argv)
    n, server = args.events, None
    if args.database_url:
        url = args.database_url.rsplit("/", 1)[0] + f"/{DB}"
    else:
        from stack.env import start_postgres

        server = start_postgres(Path(tempfile.mkdtemp(prefix="bench-reconcile-")))
        url = server.url(DB)
    plain = sa.make_url(url).set(drivername="postgresql")
    db_dsn = plain.render_as_string(hide_password=False)
    server_dsn = plain.set(database="postgres").render_as_string(hide_password=False)
    try:
        print(f"generating {n:,} events and {n:,} acknowledgements inside Postgres ...", flush=True)
        gen_s = generate(server_dsn, db_dsn, url, n)
        print(f"  generated in {gen_s:.1f}s; reconciling (clean) ...", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix="bench-reconcile-out-"))
        clean_rc, clean_s, clean = run_reconcile(url, tmp / "clean.json")
        clean_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"  {clean['verdict_line']} in {clean_s:.1f}s, peak RSS {clean_rss:.0f} MB", flush=True)
        planted = plant(db_dsn, n)
        planted_rc, planted_s, rep = run_reconcile(url, tmp / "planted.json")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        got = found(rep)
        hits = {k: len(v & got.get(k, set())) for k, v in planted.items()}
        g = rep["groups"][0]
        counts = {k: g[k] for k in ("missing", "duplicated", "out_of_order", "stuck", "unexpected")}
        print(f"  planted 100, found {sum(hits.values())} named ({hits}); counts {counts}; {planted_s:.1f}s",
              flush=True)
    finally:
        if server is not None:
            server.stop()
    result = {
        "events": n, "acknowledgements": n, "consumer_groups": 1,
        "seconds": round(clean_s, 2), "peak_rss_mb": round(clean_rss, 1),
        "reconciler_elapsed_s": clean["elapsed_s"], "clean_exit_code": clean_rc, "clean_verdict": clean["verdict"],
        "planted": 100, "found": sum(hits.values()), "found_by_kind": hits, "counts": counts,
        "planted_exit_code": planted_rc, "planted_seconds": round(planted_s, 2),
        "planted_peak_rss_mb": round(rss, 1), "generate_seconds": round(gen_s, 1),
        "goal": {"seconds": 30, "peak_rss_mb": 300},
        "pass": clean_rc == 0 and planted_rc == 1 and sum(hits.values()) == 100 and clean_s <= 30 and rss <= 300,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        "notes": "wall seconds of `outbox reconcile` as a subprocess (includes interpreter start-up); "
                 "peak RSS is the reconciler process's ru_maxrss",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
