"""Write-path overhead (P3): a business transaction with vs without one outbox event, same run, same database.

``python -m bench.write`` (part of ``make bench``). Eight writer *processes* (like eight app workers; threads would
measure the GIL) each loop ``BEGIN; INSERT one business row; [enqueue one event]; COMMIT`` for a fixed time.

Built for a small, shared, noisy machine: many short rounds, each a *pair* (without, with) run back to back in
alternating order, so drift (autovacuum, WAL, a noisy neighbour) hits both sides of a pair alike, and before each
pair the bench waits (up to ``--quiet-wait`` s) for other work to leave the CPUs idle. ``ratio`` is the median of
the per-pair ratios (with ÷ without, goal ≥ 0.9); the median throughputs are reported too, and the median over
the pairs that other work left quiet. Every round records how busy the machine's CPUs were (ours and others') and
our own CPU per transaction (writers; Postgres backends; Postgres background processes), so the result says
whether the transactions were CPU-bound or waiting on round trips and commits (``bound``). Then a single writer
measures the CPU one event adds without contention, and the per-event cost of batched ``enqueue`` (1, 10, 100
events per transaction).

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

from bench.cpu import await_quiet, cpu_of, process_cpu, spent

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
            extra, start_at, seconds = msg
            while time.time() < start_at:
                time.sleep(0.001)
            stop_at, n = start_at + seconds, 0
            while time.time() < stop_at:
                customer = f"c-{rnd.randrange(KEYS)}"
                with conn.begin():
                    oid = conn.execute(sa.insert(business).values(customer=customer, total=Decimal("9.99"))
                                       .returning(business.c.id)).scalar_one()
                    if extra == EVENT:
                        outbox.enqueue(conn, outbox.Event(topic="orders", type="order.created", key=customer,
                                                          data={"id": oid, "customer": customer, "total": "9.99"}))
                    elif extra == ROUND_TRIP:
                        cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                        cur.execute("SELECT 1")
                        cur.fetchall()
                n += 1
            pipe.send(n)
    engine.dispose()


# What each writer adds to the business transaction in a round: nothing, one event, or (the reference) a bare
# SELECT 1 on the driver's cursor, i.e. what one more round trip costs whatever the statement does.
NOTHING, EVENT, ROUND_TRIP = "nothing", "event", "round_trip"
BUSY_CPU_BOUND = 0.9  # the machine's CPUs at least this busy during the rounds: the transactions were CPU-bound
QUIET = 0.15  # other work using at most this share of the machine's CPUs: a quiet round
QUIET_WAIT_S = 30.0  # before each pair, wait up to this long for the machine to be quiet
REFERENCE_ROUNDS = 5  # pairs without vs with one bare round trip, after the main rounds


def _round(pipes: list[Pipe], extra: str, seconds: float, clients: list[Any],
           server: Callable[[], tuple[list[Any], list[Any]]]) -> dict[str, Any]:
    """One timed round: transactions/s, CPU µs per transaction (writers, Postgres backends, Postgres background
    processes; None when the database is not local) and how busy the machine's CPUs were."""
    backends, background = server()
    start_at = time.time() + 0.3
    for p in pipes:
        p.send((extra, start_at, seconds))
    # CPU is sampled over the timed window itself, not the lead-in while the writers wait for start_at
    time.sleep(max(0.0, start_at - time.time()))
    c0, b0, g0 = cpu_of(clients), cpu_of(backends), cpu_of(background)
    m0 = psutil.cpu_times()
    time.sleep(max(0.0, start_at + seconds - time.time()))
    m1 = psutil.cpu_times()
    backends, background = server()  # again: autovacuum workers come and go (a newcomer counts from zero)
    c1, b1, g1 = cpu_of(clients), cpu_of(backends), cpu_of(background)
    txns = sum(p.recv() for p in pipes)
    n = max(txns, 1)
    local = bool(backends)
    total = sum(m1) - sum(m0)
    idle = (m1.idle - m0.idle) + (getattr(m1, "iowait", 0.0) - getattr(m0, "iowait", 0.0))
    ours = spent(c0, c1) + spent(b0, b1) + spent(g0, g1)
    return {
        "tps": txns / seconds,
        "client_us": spent(c0, c1) / n * 1e6,
        "backend_us": spent(b0, b1) / n * 1e6 if local else None,
        "background_us": spent(g0, g1) / n * 1e6 if local else None,
        # fractions of all the machine's CPU time during the round (the round's wall time x cpus)
        "busy": 1 - idle / total if total > 0 else None,
        "ours": ours / total if total > 0 and local else None,
        "steal": (getattr(m1, "steal", 0.0) - getattr(m0, "steal", 0.0)) / total if total > 0 else None,
    }


def isolated_costs(url: str, blocks: int = 7, txns: int = 400) -> dict[str, dict[str, float] | None]:
    """CPU µs that one event adds to one business transaction with a single writer (no contention, warm):
    writer thread CPU and its Postgres backend's CPU, median of interleaved blocks with and without."""
    import outbox

    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    rnd = random.Random(99)

    def block(conn: sa.Connection, backend: int, with_event: bool) -> tuple[float, float]:
        c0, s0 = time.thread_time(), process_cpu(backend) if local else 0.0
        for _ in range(txns):
            customer = f"c-{rnd.randrange(KEYS)}"
            with conn.begin():
                oid = conn.execute(sa.insert(business).values(customer=customer, total=Decimal("9.99"))
                                   .returning(business.c.id)).scalar_one()
                if with_event:
                    outbox.enqueue(conn, outbox.Event(topic="orders", type="order.created", key=customer,
                                                      data={"id": oid, "customer": customer, "total": "9.99"}))
        c1, s1 = time.thread_time(), process_cpu(backend) if local else 0.0
        return (c1 - c0) / txns * 1e6, (s1 - s0) / txns * 1e6

    out: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with engine.connect() as conn:
        backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        conn.commit()
        try:
            local = "postgres" in psutil.Process(backend).name()
        except psutil.Error:  # the database runs elsewhere
            local = False
        block(conn, backend, True)  # warm-up
        for b in range(blocks):
            for we in ((False, True) if b % 2 == 0 else (True, False)):
                out[we].append(block(conn, backend, we))
    engine.dispose()

    def costs(i: int) -> dict[str, float]:
        wo, wi = (statistics.median(x[i] for x in out[we]) for we in (False, True))
        return {"without_event": round(wo, 1), "with_event": round(wi, 1), "per_event": round(wi - wo, 1)}

    return {"client": costs(0), "server_backend": costs(1) if local else None}


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


def _server_processes(url: str) -> Callable[[], tuple[list[Any], list[Any]]]:
    """Postgres's processes when it runs on this machine, for CPU accounting: (the backends of the bench's
    database, everything else: postmaster, WAL writer, checkpointer, autovacuum, I/O workers...)."""
    eng = sa.create_engine(url)
    with eng.connect() as c:
        pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        try:  # while the backend still exists
            postmaster = psutil.Process(pid).parent()
        except psutil.Error:
            postmaster = None
    eng.dispose()
    if postmaster is None or "postgres" not in postmaster.name():
        return lambda: ([], [])

    def split() -> tuple[list[Any], list[Any]]:
        backends: list[Any] = []
        background: list[Any] = [postmaster]
        for p in postmaster.children():
            try:
                title = " ".join(p.cmdline())
            except psutil.Error:
                continue
            (backends if f" {DB} " in title else background).append(p)
        return backends, background

    return split


def run(url: str, *, writers: int, rounds: int, seconds: float, quiet_wait: float = QUIET_WAIT_S) -> dict[str, Any]:
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
    samples: dict[str, list[dict[str, Any]]] = {NOTHING: [], EVENT: [], ROUND_TRIP: []}
    reference: list[float] = []
    reference_base: list[dict[str, Any]] = []
    try:
        for extra in (EVENT, ROUND_TRIP, NOTHING):  # warm-up: connections, imports, prepared statements
            _round(pipes, extra, 1.0, clients, server)
        waited: list[float] = []
        for r in range(rounds):
            waited.append(await_quiet(quiet_wait, QUIET))
            # alternate which side goes first, so neither always runs on a warmer database
            order = (NOTHING, EVENT) if r % 2 == 0 else (EVENT, NOTHING)
            for extra in order:
                samples[extra].append(_round(pipes, extra, seconds, clients, server))
            wo, wi = samples[NOTHING][-1], samples[EVENT][-1]
            print(f"round {r + 1}/{rounds}: without {wo['tps']:.0f}/s, with {wi['tps']:.0f}/s "
                  f"(ratio {wi['tps'] / wo['tps']:.2f}; CPUs busy {wo['busy']:.0%} / {wi['busy']:.0%}, "
                  f"others {_others(wo)} / {_others(wi)}; waited {waited[-1]} s for quiet)", flush=True)
        for r in range(REFERENCE_ROUNDS):  # the ceiling of any design that adds one statement
            await_quiet(quiet_wait, QUIET)
            pair = {extra: _round(pipes, extra, seconds, clients, server)
                    for extra in ((NOTHING, ROUND_TRIP) if r % 2 == 0 else (ROUND_TRIP, NOTHING))}
            samples[ROUND_TRIP].append(pair[ROUND_TRIP])
            reference_base.append(pair[NOTHING])
            reference.append(round(pair[ROUND_TRIP]["tps"] / pair[NOTHING]["tps"], 3))
            print(f"reference {r + 1}/{REFERENCE_ROUNDS}: one more bare round trip, ratio {reference[-1]:.2f} "
                  f"(others {_others(pair[NOTHING])} / {_others(pair[ROUND_TRIP])})", flush=True)
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
    without = [round(s["tps"], 1) for s in samples[NOTHING]]
    with_ = [round(s["tps"], 1) for s in samples[EVENT]]
    pair_ratios = [round(w / wo, 3) for wo, w in zip(without, with_, strict=True)]
    others = [[_round3(s["busy"] - s["ours"]) if s["ours"] is not None else None for s in (wo, wi)]
              for wo, wi in zip(samples[NOTHING], samples[EVENT], strict=True)]
    quiet = [r for r, o in zip(pair_ratios, others, strict=True) if all(x is not None and x <= QUIET for x in o)]
    cpu = {side: _median_cpu(samples[extra]) for side, extra in (("without_event", NOTHING), ("with_event", EVENT))}
    rt_cpu, rt_base = _median_cpu(samples[ROUND_TRIP]), _median_cpu(reference_base)
    both = samples[NOTHING] + samples[EVENT]
    busy = _median([s["busy"] for s in both])
    ours = _median([s["ours"] for s in both])
    return {
        "writers": writers, "rounds": rounds, "round_seconds": seconds,
        "txn_per_s_without_event": statistics.median(without), "txn_per_s_with_event": statistics.median(with_),
        "ratio": round(statistics.median(pair_ratios), 3), "goal": 0.9,
        "ratio_definition": "median over rounds of (tx/s with the event / tx/s without), each round a back-to-back "
                            "pair in alternating order",
        "ratio_of_median_throughputs": round(statistics.median(with_) / statistics.median(without), 3),
        "rounds_without": without, "rounds_with": with_, "round_ratios": pair_ratios,
        "round_cpu_others": others, "round_waited_for_quiet_s": waited,
        "quiet_rounds": len(quiet),
        "ratio_quiet_rounds": round(statistics.median(quiet), 3) if len(quiet) >= 3 else None,
        "cpu_us_per_txn": cpu,
        "cpu_us_per_event": {k: _diff(cpu["with_event"][k], cpu["without_event"][k]) for k in cpu["with_event"]},
        "machine_cpu": {
            "busy": busy, "ours": ours, "others": _diff(busy, ours),
            "steal": _median([s["steal"] for s in both]),
            "busy_without_event": _median([s["busy"] for s in samples[NOTHING]]),
            "busy_with_event": _median([s["busy"] for s in samples[EVENT]]),
            "note": "fractions of all CPU time of the machine during the rounds (median of rounds); "
                    "ours = the writers + Postgres, others = everything else on the machine",
        },
        "bound": _bound(busy),
        "reference_one_more_round_trip": {
            "what": "the same business transaction plus a bare SELECT 1 on the driver's cursor instead of the event: "
                    "the ratio any design that adds one statement could reach here at best",
            "ratio": round(statistics.median(reference), 3) if reference else None, "round_ratios": reference,
            "cpu_us_per_statement": {k: _diff(rt_cpu[k], rt_base[k]) for k in rt_cpu},
        },
        "mean_txn_latency_ms": {"without_event": round(writers / statistics.median(without) * 1e3, 2),
                                "with_event": round(writers / statistics.median(with_) * 1e3, 2)},
        "single_writer_cpu_us": isolated_costs(url),
        "batched_enqueue_us_per_event": batch_costs(url),
        "postgres": pg, "cpus": os.cpu_count(), "python": platform.python_version(),
    }


def _others(sample: dict[str, Any]) -> str:
    return "?" if sample["ours"] is None else f"{sample['busy'] - sample['ours']:.0%}"


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def _median_cpu(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    out = {k: _median([s[k] for s in samples]) for k in ("client_us", "backend_us", "background_us")}
    server = None if out["backend_us"] is None or out["background_us"] is None else \
        out["backend_us"] + out["background_us"]
    return {"client": _round1(out["client_us"]), "server": _round1(server),
            "server_backends": _round1(out["backend_us"]), "server_background": _round1(out["background_us"])}


def _round1(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _round3(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _bound(busy: float | None) -> str:
    if busy is None:
        return "unknown"
    if busy >= BUSY_CPU_BOUND:
        return (f"cpu: the CPUs were {busy:.0%} busy, so throughput is CPU time per transaction "
                "(writers + Postgres) divided into the cores, and the ratio follows the CPU added per event")
    return (f"latency: the CPUs were only {busy:.0%} busy, so transactions wait on round trips and commits; "
            "the ratio follows the latency the extra statement adds")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quiet-wait", type=float, default=QUIET_WAIT_S,
                    help="before each pair, wait up to this many seconds for other work to leave the CPUs idle")
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
        result = run(url, writers=args.writers, rounds=args.rounds, seconds=args.seconds,
                     quiet_wait=args.quiet_wait)
    finally:
        if stack is not None:
            stack.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "write.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
