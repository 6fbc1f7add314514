"""Retention at scale: claim latency before and after ``outbox prune`` deletes 1,000,000 published rows.

``python -m bench.prune`` (part of ``make bench``). Steps, on a migrated database (``ops_0002`` autovacuum
settings included):

1. bulk-load 1,000,000 published events (30 days old) plus 2,000 pending ones, with every index in place;
   subscribe one consumer group and record a reconcile checkpoint covering the published range;
2. measure the relay's real claim (``RelayStore.claim``, the ``shard = :s AND published_at IS NULL AND dead_at
   IS NULL ORDER BY id LIMIT n`` shape over the partial index) ``--samples`` times;
3. run ``outbox prune --older-than 7d`` as a subprocess (its own wall time), then measure the claim again at
   once (dead tuples still there), and again after autovacuum has processed the table (waits for it; runs a
   plain VACUUM if it has not come within ``--autovacuum-wait`` seconds, and says so).

Claim: the claim's latency stays flat (median after / before close to 1). Result: ``bench/results/prune.json``.
Postgres: ours (``stack.env.start_postgres``), unless ``--database-url`` names a server to use.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

RESULTS = Path(__file__).resolve().parent / "results"
DB = "bench_prune"
SHARDS = 8
LOAD = """INSERT INTO outbox.event (event_id, topic, key, shard, payload, content_type, type, source, time, key_seq,
    created_at, published_at, kafka_partition, kafka_offset, relay_epoch)
SELECT gen_random_uuid(), 'orders', convert_to('k' || (i %% 10000), 'UTF8'), i %% 8,
       convert_to(repeat('x', 200), 'UTF8'), 'application/json', 'order.created', 'urn:bench', t, i / 10000 + 1,
       t, t + interval '20 ms', i %% 12, i, 1
FROM generate_series(%(lo)s, %(hi)s) AS i, LATERAL (SELECT now() - interval '30 days' + i * interval '1 ms') AS x(t)"""
PENDING = """INSERT INTO outbox.event (event_id, topic, key, shard, payload, content_type, type, source, time, key_seq)
SELECT gen_random_uuid(), 'orders', convert_to('p' || i, 'UTF8'), i %% 8, convert_to('{}', 'UTF8'),
       'application/json', 'order.created', 'urn:bench', now(), 1
FROM generate_series(1, %(n)s) AS i"""


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def _prepare(server_url: str, rows: int, pending: int) -> str:
    from alembic import command

    from migrations import alembic_config

    base, _, _ = server_url.rpartition("/")
    with psycopg.connect(_dsn(f"{base}/postgres"), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{DB}"')
    url = f"{base}/{DB}"
    command.upgrade(alembic_config(url), "heads")
    t0 = time.monotonic()
    with psycopg.connect(_dsn(url), autocommit=True) as c:
        for lo in range(1, rows + 1, 100_000):
            c.execute(LOAD, {"lo": lo, "hi": min(rows, lo + 99_999)})
        c.execute(PENDING, {"n": pending})
        hi = c.execute("SELECT max(id) FROM outbox.event WHERE published_at IS NOT NULL").fetchone()[0]  # type: ignore[index]
        c.execute("INSERT INTO outbox.subscription (consumer_group, topic) VALUES ('bench', 'orders')")
        c.execute("INSERT INTO outbox.reconcile_checkpoint (consumer_group, id_lo, id_hi, expected, acknowledged, "
                  "digest) VALUES ('bench', 1, %s, %s, %s, 'bench')", (hi, hi, hi))
        c.execute("VACUUM ANALYZE outbox.event")
    print(f"loaded {rows} published + {pending} pending rows in {time.monotonic() - t0:.1f}s", flush=True)
    return url


def _claims(engine: sa.Engine, samples: int, limit: int) -> dict[str, float]:
    from outbox.store.relay import RelayStore

    store = RelayStore(engine)
    for s in range(SHARDS):  # warm the pool and the cache
        store.claim(s, limit)
    lat = []
    for i in range(samples):
        t0 = time.perf_counter()
        rows = store.claim(i % SHARDS, limit)
        lat.append((time.perf_counter() - t0) * 1000)
        assert rows, "the pending rows must be claimable"
    lat.sort()
    return {"median_ms": round(statistics.median(lat), 3), "p95_ms": round(lat[int(len(lat) * 0.95) - 1], 3),
            "max_ms": round(lat[-1], 3), "samples": samples}


def _stats(url: str) -> dict[str, Any]:
    with psycopg.connect(_dsn(url)) as c:
        r = c.execute("SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count, "
                      "pg_total_relation_size('outbox.event'), pg_relation_size('outbox.ix_event_pending') "
                      "FROM pg_stat_user_tables WHERE relid = 'outbox.event'::regclass").fetchone()
    assert r is not None
    keys = ("live_tuples", "dead_tuples", "autovacuum_count", "vacuum_count", "table_bytes", "pending_index_bytes")
    return dict(zip(keys, (int(v) for v in r), strict=True))


def _explain(engine: sa.Engine) -> str:
    with engine.connect() as c:
        plan = c.execute(sa.text(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT id FROM outbox.event WHERE shard = 3 AND "
            "published_at IS NULL AND dead_at IS NULL ORDER BY id LIMIT 2000")).scalars().all()
    return "\n".join(plan)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--database-url", help="a server to use (any database on it); default: start our own")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pending", type=int, default=2_000)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--claim-limit", type=int, default=2000)
    ap.add_argument("--autovacuum-wait", type=float, default=150.0)
    args = ap.parse_args(argv)

    pg = None
    server = args.database_url
    if server is None:
        from stack.env import start_postgres

        pg = start_postgres(Path(tempfile.mkdtemp(prefix="bench-prune-")))
        server = pg.url()
    try:
        url = _prepare(server, args.rows, args.pending)
        engine = sa.create_engine(url, pool_size=2)
        result: dict[str, Any] = {"rows": args.rows, "pending": args.pending, "claim_limit": args.claim_limit,
                                  "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
        result["before"] = {"claim": _claims(engine, args.samples, args.claim_limit), "table": _stats(url)}
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-c", "from relay.cli import main; main()", "prune",
                              "--older-than", "7d", "--batch-size", "10000"],
                             env={**os.environ, "OUTBOX_DATABASE_URL": url}, capture_output=True, text=True,
                             check=False)
        took = time.monotonic() - t0
        if res.returncode != 0:
            print(res.stdout, res.stderr, file=sys.stderr)
            return 1
        deleted = int(res.stdout.split("deleted ")[1].split()[0])
        result["prune"] = {"deleted": deleted, "seconds": round(took, 2), "rows_per_s": round(deleted / took)}
        print(f"pruned {deleted} rows in {took:.1f}s", flush=True)
        result["after_prune"] = {"claim": _claims(engine, args.samples, args.claim_limit), "table": _stats(url)}
        before_av = result["after_prune"]["table"]["autovacuum_count"]
        deadline = time.monotonic() + args.autovacuum_wait
        while time.monotonic() < deadline and _stats(url)["autovacuum_count"] == before_av:
            time.sleep(2)
        autovacuumed = _stats(url)["autovacuum_count"] > before_av
        if not autovacuumed:
            with psycopg.connect(_dsn(url), autocommit=True) as c:
                c.execute("VACUUM outbox.event")
        result["after_vacuum"] = {"by": "autovacuum" if autovacuumed else "manual VACUUM (autovacuum did not run "
                                  f"within {args.autovacuum_wait:.0f}s)",
                                  "claim": _claims(engine, args.samples, args.claim_limit), "table": _stats(url)}
        b = result["before"]["claim"]["median_ms"]
        result["median_ratio_after_prune"] = round(result["after_prune"]["claim"]["median_ms"] / b, 3)
        result["median_ratio_after_vacuum"] = round(result["after_vacuum"]["claim"]["median_ms"] / b, 3)
        result["claim_plan_after_vacuum"] = _explain(engine)
        engine.dispose()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "prune.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return 0
    finally:
        if pg is not None:
            pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
