"""Write-path overhead (P3): a business transaction with vs without one outbox event, same run, same database.

``python -m bench.write`` (part of ``make bench``). Eight writer *processes* (like eight app workers; threads would
measure the GIL) each loop ``BEGIN; INSERT one business row; [enqueue one event]; COMMIT`` for a fixed time.
Rounds alternate without/with the event, so drift (autovacuum, WAL, a noisy neighbour) hits both sides alike; the
medians of the rounds give the throughputs and ``ratio`` = with ÷ without (goal ≥ 0.9). Then one writer measures
the per-event cost of batched ``enqueue`` (1, 10, 100 events per transaction).

Postgres: ours (``stack.env.start_stack(with_kafka=False)``, fsync on) unless ``OUTBOX_DATABASE_URL`` is set.
Result: ``bench/results/write.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

RESULTS = Path(__file__).resolve().parent / "results"
DB = "bench_write"
KEYS = 10_000  # distinct customers: realistic low contention per key

business = sa.Table(
    "bench_order", sa.MetaData(schema="public"),
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("total", sa.Numeric(10, 2), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
)


def _writer(url: str, wid: int, pipe: Pipe) -> None:
    import outbox

    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    rnd = random.Random(wid)
    with engine.connect() as conn:
        while True:
            msg = pipe.recv()
            if msg is None:
                break
            with_event, start_at, seconds = msg
            while time.time() < start_at:
                time.sleep(0.001)
            stop_at, n = start_at + seconds, 0
            while time.time() < stop_at:
                customer = f"c-{rnd.randrange(KEYS)}"
                with conn.begin():
                    oid = conn.execute(sa.insert(business).values(customer=customer, total=Decimal("9.99"))
                                       .returning(business.c.id)).scalar_one()
                    if with_event:
                        outbox.enqueue(conn, outbox.Event(topic="orders", type="order.created", key=customer,
                                                          data={"id": oid, "customer": customer, "total": "9.99"}))
                n += 1
            pipe.send(n)
    engine.dispose()


def _cpu(procs: list[Any]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a backend that exited during the round
            pass
    return total


def _round(pipes: list[Pipe], with_event: bool, seconds: float, clients: list[Any],
           server: Callable[[], list[Any]]) -> tuple[float, float, float | None]:
    """Transactions/s, client CPU µs/txn, server CPU µs/txn (None when the database is not local)."""
    srv = server()
    c0, s0 = _cpu(clients), _cpu(srv)
    start_at = time.time() + 0.3
    for p in pipes:
        p.send((with_event, start_at, seconds))
    txns = sum(p.recv() for p in pipes)
    c1, s1 = _cpu(clients), _cpu(srv)
    n = max(txns, 1)
    return txns / seconds, (c1 - c0) / n * 1e6, ((s1 - s0) / n * 1e6) if srv else None


def batch_costs(url: str, sizes: tuple[int, ...] = (1, 10, 100), events: int = 3000) -> dict[str, float]:
    """Microseconds per event of enqueue, by batch size (one writer, one transaction per batch)."""
    import outbox

    engine = sa.create_engine(url)
    out: dict[str, float] = {}
    with engine.connect() as conn:
        for size in sizes:
            t0 = time.perf_counter()
            for b in range(events // size):
                with conn.begin():
                    outbox.enqueue(conn, *(outbox.Event(topic="batch", type="t", key=f"k-{(b * size + i) % KEYS}",
                                                        data={"i": i}) for i in range(size)))
            out[str(size)] = round((time.perf_counter() - t0) / (events // size * size) * 1e6, 1)
    engine.dispose()
    return out


def prepare_database(admin_url: str, url: str) -> None:
    from alembic import command

    from migrations import alembic_config

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)'))
        c.execute(sa.text(f'CREATE DATABASE "{DB}"'))
    admin.dispose()
    command.upgrade(alembic_config(url), "heads")
    eng = sa.create_engine(url)
    business.metadata.create_all(eng)
    eng.dispose()


def _server_processes(url: str) -> Callable[[], list[Any]]:
    """Postgres's processes (backends, WAL writer, ...) when it runs on this machine, for CPU accounting."""
    eng = sa.create_engine(url)
    with eng.connect() as c:
        pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        try:  # while the backend still exists
            postmaster = psutil.Process(pid).parent()
        except psutil.Error:
            postmaster = None
    eng.dispose()
    if postmaster is None or "postgres" not in postmaster.name():
        return list
    return lambda: [postmaster, *postmaster.children()]


def run(url: str, *, writers: int, rounds: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    server = _server_processes(url)
    pipes, procs = [], []
    for w in range(writers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_writer, args=(url, w, child), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    clients = [psutil.Process(p.pid) for p in procs]
    cpu: dict[bool, list[tuple[float, float | None]]] = {False: [], True: []}
    try:
        _round(pipes, True, 1.0, clients, server)  # warm-up: connections, imports, prepared statements
        _round(pipes, False, 1.0, clients, server)
        without: list[float] = []
        with_: list[float] = []
        for r in range(rounds):
            # alternate which side goes first, so neither always runs on a warmer database
            order = (False, True) if r % 2 == 0 else (True, False)
            for we in order:
                tps, c_us, s_us = _round(pipes, we, seconds, clients, server)
                (with_ if we else without).append(round(tps, 1))
                cpu[we].append((c_us, s_us))
            print(f"round {r + 1}/{rounds}: without {without[-1]:.0f}/s, with {with_[-1]:.0f}/s", flush=True)
    finally:
        for pipe in pipes:
            pipe.send(None)
        for proc in procs:
            proc.join(30)
    eng = sa.create_engine(url)
    with eng.connect() as c:
        pg = {k: c.execute(sa.text(f"SHOW {k}")).scalar_one()
              for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")}
    eng.dispose()
    m_without, m_with = statistics.median(without), statistics.median(with_)
    return {
        "writers": writers, "rounds": rounds, "round_seconds": seconds,
        "txn_per_s_without_event": m_without, "txn_per_s_with_event": m_with,
        "ratio": round(m_with / m_without, 3), "goal": 0.9,
        "rounds_without": without, "rounds_with": with_,
        "cpu_us_per_txn": {side: _median_cpu(cpu[we]) for side, we in (("without_event", False),
                                                                         ("with_event", True))},
        "batched_enqueue_us_per_event": batch_costs(url),
        "postgres": pg, "cpus": os.cpu_count(), "python": platform.python_version(),
    }


def _median_cpu(samples: list[tuple[float, float | None]]) -> dict[str, float | None]:
    servers = [s for _, s in samples if s is not None]
    return {"client": round(statistics.median(c for c, _ in samples), 1),
            "server": round(statistics.median(servers), 1) if servers else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    stack = None
    base = os.environ.get("OUTBOX_DATABASE_URL")
    if not base:
        from stack.env import start_stack

        stack = start_stack(home=Path("/tmp") / f"outbox-bench-write-{os.getpid()}", with_kafka=False)
        base = stack.database_url
    try:
        root = base.rpartition("/")[0]
        url = f"{root}/{DB}"
        prepare_database(f"{root}/postgres", url)
        result = run(url, writers=args.writers, rounds=args.rounds, seconds=args.seconds)
    finally:
        if stack is not None:
            stack.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "write.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
