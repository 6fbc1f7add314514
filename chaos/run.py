"""One fault-suite run: build the stack, run the workload under the fault schedule, then verify independently.

``python -m chaos --tier full`` (``make chaos``) writes ``chaos-results.json``; the small tier runs inside
``make test`` (tests/chaos/). ``--broken`` runs a deliberately wrong relay that the checks must catch
(chaos/faulty_relay.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command

from chaos.checker import check
from chaos.faults import Injector, Plan, schedule
from chaos.forensics import report
from chaos.proxy import FaultProxy
from chaos.workload import Workload
from migrations import alembic_config
from stack.env import start_cluster, start_postgres
from stack.verify import find_hanging, skipped_markers

TOPICS = ["chaos-orders", "chaos-payments"]
CHECKPOINT_TOPIC = "outbox-relay-checkpoints"  # the relays run with the default (forensics reads it)
GROUPS = ["billing", "shipping"]


@dataclass(frozen=True)
class Outcome:
    results: dict[str, object]
    home: Path

    @property
    def clean(self) -> bool:
        return bool(self.results["independent_check"] == "pass" and self.results["reconciler_verdict"] == "proven")


def _log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _pending(dsn: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=5) as c:
            row = c.execute("SELECT count(*) FROM outbox.event WHERE published_at IS NULL AND dead_at IS NULL"
                            ).fetchone()
            return int(row[0]) if row else -1
    except psycopg.Error:
        return -1


def _acked(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        return {g: int(n) for g, n in c.execute(
            "SELECT consumer_group, count(*) FROM outbox.inbox GROUP BY 1").fetchall()}


def _await(cond: object, timeout: float, what: str, work: Workload) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        work.revive()
        if cond():  # type: ignore[operator]
            return
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def _await_acks(dsn: str, total: int, work: Workload, timeout: float = 600, settle: float = 45) -> None:
    """Until every group acknowledged ``total`` events, or the counts stop moving for ``settle`` seconds: a lost
    event is never acknowledged, and the checks below must get to name it rather than time out here."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    moved = time.monotonic()
    while time.monotonic() < deadline:
        work.revive()
        now = _acked(dsn)
        if all(now.get(g, 0) >= total for g in GROUPS):
            return
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved > settle:
            _log(f"acknowledgements settled below {total}: {now}")
            return
        time.sleep(1)
    raise TimeoutError(f"consumers still acknowledging after {timeout:.0f}s: {last} of {total}")


def run(plan: Plan, home: Path, seed: int = 1, broken: bool = False) -> Outcome:
    started = time.monotonic()
    home.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _log(f"tier={plan.tier} seed={seed} broken={broken} home={home}")
    pg = start_postgres(home)
    cluster = start_cluster(home, nodes=3)
    proxy = FaultProxy(pg.port)
    work = None
    try:
        url = pg.url()
        command.upgrade(alembic_config(url), "heads")
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS public.chaos_order "
                      "(id bigserial primary key, key text not null, n int not null)")
        for t in TOPICS:
            cluster.create_topic(t, partitions=6)
        relay_url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/postgres"
        relay_env = {"OUTBOX_RELAY_LEASE_TTL_S": str(plan.lease_ttl_s), "OUTBOX_RELAY_BATCH_SIZE": "500"}
        if broken:
            # Marks before the Kafka commit, and dies between the two: the checks must report loss.
            relay_env.update({"FAULTY_RELAY_BROKEN": "mark_before_commit",
                              "FAULTY_RELAY_KILL_AT": "mid_produce", "FAULTY_RELAY_KILL_BATCH": "3"})
        work = Workload(home, url, relay_url, cluster.bootstrap, TOPICS, GROUPS)
        work.build(plan.writers, plan.rate, plan.keys, relay_env=relay_env,
                   relay_module="chaos.faulty_relay" if broken else "relay")
        work.start()
        inj = Injector(plan, work, cluster, pg, proxy, rng)
        t0 = time.monotonic()
        for at, fault in schedule(plan, seed):
            while time.monotonic() - t0 < at:
                work.revive()
                time.sleep(0.2)
            _log(f"t={time.monotonic() - t0:6.1f}s fault {fault.value}")
            inj.fire(fault)
        while time.monotonic() - t0 < plan.duration_s or (
                work.writer_stats()["committed"] < plan.min_events and time.monotonic() - t0 < plan.duration_s * 1.5):
            work.revive()
            time.sleep(0.2)
        work.stop_writers()
        _log(f"writers stopped: {work.writer_stats()}; draining")
        _await(lambda: _pending(pg.dsn()) == 0, 600, "the relays to drain the backlog", work)
        with psycopg.connect(pg.dsn()) as c:
            row = c.execute("SELECT count(*) FROM outbox.event WHERE dead_at IS NULL").fetchone()
            total = int(row[0]) if row else 0
        _await_acks(pg.dsn(), total, work, timeout=max(600.0, total / 100))
        work.stop_all()
        _log("verifying with Kafka's ConsoleConsumer (read_committed)")
        verdict = check(pg.dsn(), cluster.bootstrap, TOPICS)
        hanging = find_hanging(cluster.bootstrap, [n.node_id for n in cluster.nodes])
        rec = subprocess.run([sys.executable, "-c", "from relay.cli import main; main()", "reconcile",
                              "--format", "json", "--grace", "0", "--database-url", url],
                             capture_output=True, text=True, check=False)
        reconciler = {0: "proven", 1: "discrepancies", 4: "inconclusive"}.get(rec.returncode,
                                                                             f"could not run ({rec.returncode})")
        stats = work.writer_stats()
        results: dict[str, object] = {
            "tier": plan.tier, "seed": seed, "broken_relay": broken,
            "events": verdict.events, "lost": verdict.lost, "duplicates": verdict.duplicates,
            "order_violations": verdict.order_violations, "phantoms": verdict.phantoms,
            "checker_rereads": verdict.rereads,
            "relay_kills": inj.counts["relay_kill"], "relay_stops": inj.counts["relay_stop"],
            "broker_kills": inj.counts["broker_bounce"], "db_restarts": inj.counts["db_restart"],
            "outage_seconds": inj.counts.get("outage_seconds", 0),
            "partitions_injected": inj.counts["net_blackhole"] + inj.counts["net_reset"],
            "hanging_transactions": len(hanging),
            # Kafka's own log of transactions it completed without deciding their records on some partitions
            # (stack.verify.skipped_markers): a loss or duplicate there is the broker's, named so a failing run
            # says whose it is.
            "kafka_skipped_markers": skipped_markers(cluster),
            "independent_check": "pass" if verdict.clean and not hanging else "fail",
            "reconciler_verdict": reconciler, "reconciler_output": rec.stdout[-4000:] or rec.stderr[-2000:],
            "writer_commits": stats["committed"], "writer_failures_db": stats["failed_db"],
            "writer_failures_other": stats["failed_other"], "writer_errors": work.writer_errors(),
            "examples": verdict.as_dict()["examples"],
            "duration_s": round(time.monotonic() - started, 1),
        }
        _log(json.dumps({k: v for k, v in results.items() if k not in ("reconciler_output", "examples")}))
        if not verdict.clean:
            try:
                results["forensics"] = report(pg.dsn(), home, verdict.examples, bootstrap=cluster.bootstrap,
                                                checkpoint_topic=CHECKPOINT_TOPIC)
            except Exception as exc:
                results["forensics"] = [f"forensics failed: {type(exc).__name__}: {exc}"]
            for line in results["forensics"]:  # type: ignore[attr-defined]
                _log(line)
        return Outcome(results, home)
    finally:
        if work is not None:
            work.stop_all()
        proxy.close()
        cluster.stop()
        pg.stop()
