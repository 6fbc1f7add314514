"""``python -m demo``: see :mod:`demo`. Exits 0 when zero loss is proven; the last line is the verdict."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from rich.console import Console
from rich.markup import escape

REPO = Path(__file__).resolve().parents[1]
DATABASES = {"orders": "demo_orders", "billing": "demo_billing", "shipping": "demo_shipping"}
# Multiples and divisors of the 8 shards: each shard writes one partition of each (docs/decisions/016).
TOPICS = {"orders": 8, "payments": 4}
con = Console(highlight=False)


def say(step: str, text: str) -> None:
    con.print(f"[bold cyan]{step}[/bold cyan] {escape(text)}", soft_wrap=True)


def _plain(url: str, database: str = "postgres") -> str:
    return sa.make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


def prepare_databases(stack: Any) -> dict[str, str]:
    from alembic import command

    from migrations import alembic_config

    urls = {role: stack.url(db) for role, db in DATABASES.items()}
    with psycopg.connect(_plain(stack.database_url), autocommit=True) as c:
        for db in DATABASES.values():
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'.encode())
            c.execute(f'CREATE DATABASE "{db}"'.encode())
    for url in urls.values():  # the inbox tables live in each consumer's own database, so all three migrate
        command.upgrade(alembic_config(url), "heads")
    return urls


def kafka_admin(bootstrap: str) -> Any:
    """The demo's Kafka admin client, whose log lines go through Python logging, warnings and errors only.

    Without a logger, librdkafka prints its lines raw on stderr, among the demo's own, e.g. "%6|…|BGQUEUE|…| Purging
    1 unserved events from background queue" (informational) when the client is freed.
    """
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 4}, logger=logging.getLogger("demo.kafka"))


def create_topics(bootstrap: str) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = kafka_admin(bootstrap)
    futs = admin.create_topics([NewTopic(t, p, 1) for t, p in TOPICS.items()], operation_timeout=30)
    for f in futs.values():
        f.result(60)


def start_relay(url: str, bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OUTBOX_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "OUTBOX_RELAY_HTTP_PORT": "-1", "OUTBOX_RELAY_LOG_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "relay"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def wait_for(what: str, done: Any, timeout: float, relay: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if relay.poll() is not None:
            raise SystemExit(f"the relay exited ({relay.returncode}) while waiting for {what}; log {log}:\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)  # another process's progress; nothing to block on


def published(url: str) -> int:
    with psycopg.connect(_plain(url, sa.make_url(url).database or "")) as c:
        row = c.execute(b"SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL").fetchone()
    return int(row[0]) if row else 0


def latency_note(events: int, written: float, relayed: float, pace: dict[str, float]) -> str:
    """Why the report's delivery latency is seconds, not milliseconds: the demo's burst queues at the consumers."""
    rates = " and ".join(f"{g} ~{r:,.0f} events/s" for g, r in pace.items())
    return (f"latency p50 / p99 (above) runs from each event's write to its group's commit. The {events:,} events "
            f"came as one burst, written in {written:.1f}s and all in Kafka {relayed:.1f}s after the last write; "
            f"each group commits one database transaction per event ({rates} here), so an event waits behind the "
            "burst's earlier ones, the longer the later it was written. That queue, not the relay, is the latency "
            "shown; a load the groups keep up with sees the relay's tens of milliseconds (README, Benchmarks).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    ap.add_argument("--orders", type=int, default=5000, help="orders to write (2 events each)")
    ap.add_argument("--report", type=Path, default=REPO / "demo-report.html")
    args = ap.parse_args(argv)
    from stack.env import start_stack

    home = Path(tempfile.mkdtemp(prefix="outbox-demo-"))
    con.print("[bold]kafka-outbox demo[/bold]: orders and their events, relayed exactly once, consumed by two "
              "groups, and an audit at the end")
    t = time.monotonic()
    stack = start_stack(home=home)
    ok = False
    try:
        pg = sa.make_url(stack.database_url)
        say("1.", f"stack up in {time.monotonic() - t:.0f}s: Postgres on {pg.host}:{pg.port}, Kafka on "
            f"{stack.bootstrap}{' (your services)' if stack.external else ''}")
        rc = run(stack, args, home)
        ok = rc == 0
        return rc
    finally:
        stack.stop()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        else:
            con.print(f"logs kept in {home}", soft_wrap=True)


def run(stack: Any, args: argparse.Namespace, home: Path) -> int:
    from demo.consumers import GROUPS, Consumers
    from demo.service import create_tables, write_async, write_sync
    from outbox.reconcile import ConsumerDatabase, Options, Verdict, print_report, reconcile, render_html, seal
    from outbox.reconcile.config import hmac_key

    urls = prepare_databases(stack)
    create_tables(urls["orders"])
    create_topics(stack.bootstrap)
    topics = ", ".join(f"{t} ({p} partitions)" for t, p in TOPICS.items())
    say("2.", f"migrated {', '.join(DATABASES.values())} (outbox + inbox tables); created topics {topics}")
    log = home / "relay.log"
    relay = start_relay(urls["orders"], stack.bootstrap, log)
    consumers = Consumers({"billing": urls["billing"], "shipping": urls["shipping"]}, stack.bootstrap)
    consumers.start()
    say("3.", f"relay running (python -m relay, pid {relay.pid}); consumer groups of {consumers.members} members: "
        + "; ".join(f"{g} ← {', '.join(ts)} (inbox in {DATABASES[g]})" for g, ts in GROUPS.items()))
    try:
        t = time.monotonic()
        half = args.orders // 2
        write_sync(urls["orders"], half)
        write_async(urls["orders"], args.orders - half)
        events, written = 2 * args.orders, time.monotonic() - t
        say("4.", f"order service wrote {args.orders:,} orders in {written:.1f}s: {half:,} through a "
            f"Session, {args.orders - half:,} through AsyncSessions; each with order.created and payment.captured "
            f"in the same transaction ({events:,} events)")
        t = time.monotonic()
        want = {"billing": events, "shipping": args.orders}
        wait_for("the relay to publish every event", lambda: published(urls["orders"]) >= events, 600, relay, log)
        relayed = time.monotonic() - t
        wait_for("both groups to acknowledge every event",
                 lambda: all(n >= want[g] for g, n in consumers.acknowledged().items()), 600, relay, log)
        acks, pace = consumers.acknowledged(), consumers.pace()
        say("5.", f"the relay had published all {events:,} events {relayed:.1f}s after the last write; billing "
            f"acknowledged {acks['billing']:,} and shipping {acks['shipping']:,} after {time.monotonic() - t:.1f}s, "
            "each event in one transaction with its own side effect")
        why = latency_note(events, written, relayed, pace)
    finally:
        consumers.stop()
        if relay.poll() is None:
            os.killpg(relay.pid, signal.SIGTERM)
            relay.wait(60)
    say("6.", f"relay stopped (exit {relay.returncode}); reconciling outbox vs both inboxes ...")
    producer = sa.create_engine(urls["orders"], pool_size=6)
    dbs = [ConsumerDatabase(sa.create_engine(urls[g], pool_size=6)) for g in GROUPS]
    report = reconcile(producer, dbs, Options(grace=timedelta(0), checkpoint=True))
    key = hmac_key()
    sealed = seal(report.to_dict(), key)
    args.report.write_text(render_html(sealed))
    json_path = args.report.with_suffix(".json")
    import json

    json_path.write_text(json.dumps(sealed, indent=2, ensure_ascii=False) + "\n")
    signed = "signed with OUTBOX_REPORT_HMAC_KEY" if key else "content-hashed (set OUTBOX_REPORT_HMAC_KEY to sign)"
    print_report(sealed, con, before_verdict=[
        why, f"HTML report: {args.report} (JSON: {json_path}, {signed}; check it with `outbox verify {args.report}` "
             f"or `outbox verify {json_path}`)"])
    return 0 if report.verdict is Verdict.PROVEN else 1


if __name__ == "__main__":
    raise SystemExit(main())
