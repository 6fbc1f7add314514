"""Reconciling after ``outbox replay``, through the real relay and Kafka.

The replay re-queues published rows; the relay publishes them again at new offsets; each group's inbox receives
the second copy, deduplicates it and records its position in ``inbox_redelivery``. The reconciler must count
those copies as **replayed** (naming the replay audit), not duplicated, and still be able to fail: a copy of an
id no replay covers, or one copy more than the replays explain, is duplicated.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from outbox.inbox import Inbox
from outbox.reconcile import ConsumerDatabase, Kind, Options, Report, Verdict, reconcile
from outbox.schema import event
from relay.cli import app
from tests.integration.audit.helpers import send, write_orders
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, wait_until

pytestmark = pytest.mark.kafka
N_EVENTS, N_REPLAYED = 40, 15


class Drills:
    """A :class:`~outbox.reconcile.Progress` that remembers how many buckets had to be drilled."""

    def __init__(self) -> None:
        self.buckets = 0

    def start(self, label: str, total: int) -> None:
        if label == "drill-down":
            self.buckets += total

    def advance(self, n: int = 1) -> None:
        pass


@dataclass
class Replayed:
    producer: sa.Engine
    consumer: sa.Engine
    bootstrap: str
    topic: str
    inboxes: dict[str, Inbox]
    audit_id: int
    replayed_ids: list[int]

    def consume(self, group: str, *, received: int = 0, copies: int = 0, timeout: float = 90) -> None:
        got, copied, deadline = 0, 0, time.monotonic() + timeout
        while got < received or copied < copies:
            assert time.monotonic() < deadline, f"{group}: received {got}/{received}, copies {copied}/{copies}"
            res = self.inboxes[group].run_once()
            got, copied = got + res.received, copied + res.copies

    def reconcile(self, drills: Drills | None = None, **kw: object) -> Report:
        opts = Options(**{"grace": timedelta(0), **kw})  # type: ignore[arg-type]
        return reconcile(self.producer, [ConsumerDatabase(self.consumer), ConsumerDatabase(self.producer)], opts,
                         progress=drills)

    def row(self, oid: int) -> sa.Row:  # type: ignore[type-arg]
        with self.producer.connect() as c:
            return c.execute(sa.select(event).where(event.c.id == oid)).one()


def group(report: Report, name: str) -> dict[str, Any]:
    [g] = [g for g in report.to_dict()["groups"] if g["group"] == name]
    return g


def counts(report: Report, name: str) -> tuple[int, ...]:
    """(expected, acknowledged, missing, duplicated, replayed, unexpected) of one group."""
    g = group(report, name)
    return g["expected"], g["acknowledged"], g["missing"], g["duplicated"], g["replayed"], g["unexpected"]


def named(report: Report, name: str, kind: Kind) -> dict[int, dict[str, Any]]:
    return {f["outbox_id"]: f for f in group(report, name)["findings"] if f["kind"] == kind.value}


@pytest.fixture
def replayed(  # noqa: PLR0917 - fixtures
        producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str,
        relay_env: dict[str, str], relays: list[RelayProcess], tmp_path: Path) -> Iterator[Replayed]:
    """40 events relayed and consumed by two groups; 15 of them replayed, re-published by the relay, and the
    replayed copies received by both groups."""
    url = producer_engine.url.render_as_string(hide_password=False)
    evs = write_orders(producer_engine, topic, N_EVENTS, keys=5)
    relay = spawn(relays, relay_env, tmp_path, "replay-audit")
    inboxes = {"billing": Inbox(consumer_engine, "billing", [topic], lambda c, e: None, bootstrap=bootstrap),
               "shipping": Inbox(producer_engine, "shipping", [topic], lambda c, e: None, bootstrap=bootstrap)}
    try:
        wait_until(lambda: pending(url) == 0, 90, lambda: f"the relay to publish\n{relay.logs()}")
        ids = [e.id for e in evs[10:10 + N_REPLAYED]]
        s = Replayed(producer_engine, consumer_engine, bootstrap, topic, inboxes, 0, ids)
        for g in inboxes:
            s.consume(g, received=N_EVENTS)
        first = s.reconcile()
        assert first.verdict is Verdict.PROVEN and counts(first, "billing") == (40, 40, 0, 0, 0, 0), first.to_dict()

        res = CliRunner().invoke(app, ["replay", "--from-id", str(ids[0]), "--to-id", str(ids[-1]), "--actor",
                                       "jane (INC-4711)", "--database-url", url])
        assert res.exit_code == 0 and f"re-queued {N_REPLAYED} events" in res.stdout, res.output
        m = re.search(r"replay_audit id (\d+)", res.stdout)
        assert m, res.stdout
        s.audit_id = int(m.group(1))
        wait_until(lambda: pending(url) == 0, 90, lambda: f"the relay to publish the replay\n{relay.logs()}")
        moved = [s.row(i) for i in ids]
        assert all(r.kafka_offset is not None for r in moved), "re-published, at new positions"

        # The relay published the replay, the groups have not read it yet: their acknowledgements are of the
        # first copies, the outbox records the second ones. That is the replay in flight, not a duplicate.
        lagging = s.reconcile()
        assert lagging.verdict is Verdict.PROVEN, lagging.to_dict()
        assert counts(lagging, "billing") == (40, 40, 0, 0, N_REPLAYED, 0)
        assert all("that copy not received yet" in str(f["detail"])
                   for f in named(lagging, "billing", Kind.REPLAYED).values())

        for g in inboxes:
            s.consume(g, received=N_REPLAYED, copies=N_REPLAYED)
        yield s
    finally:
        for ib in inboxes.values():
            ib.close()


def test_replayed_copies_are_counted_as_replayed_and_the_verdict_is_proven(replayed: Replayed,
                                                                            tmp_path: Path) -> None:
    s = replayed
    drills = Drills()
    r = s.reconcile(drills)
    d = r.to_dict()
    assert r.verdict is Verdict.PROVEN, d
    for g in ("billing", "shipping"):
        assert counts(r, g) == (40, 40, 0, 0, N_REPLAYED, 0)
        found = named(r, g, Kind.REPLAYED)
        assert sorted(found) == s.replayed_ids
        assert all(f["replay_audits"] == [s.audit_id] and f"re-published by replay #{s.audit_id}" in str(f["detail"])
                   for f in found.values())
    assert drills.buckets == 0, "replayed buckets are reconciled by their corrected digests, without a drill-down"
    assert d["totals"]["replayed"] == 2 * N_REPLAYED and d["totals"]["duplicated"] == 0
    assert d["verdict_line"] == (f"verdict: zero loss proven — 40 events, 2 consumer groups, 0 missing, "
                                 f"0 duplicated, 0 out of order, {2 * N_REPLAYED} replayed (audited)")
    [rep] = d["replays"]
    assert rep == {"audit_id": s.audit_id, "actor": "jane (INC-4711)", "created_at": rep["created_at"],
                   "event_count": N_REPLAYED, "ids_in_window": N_REPLAYED, "id_runs_total": 1,
                   "id_runs": [[s.replayed_ids[0], s.replayed_ids[-1]]]}
    # a window that cuts the replay: only its ids inside count, and the replays section says which
    part = s.reconcile(from_id=s.replayed_ids[5])
    assert part.verdict is Verdict.PROVEN and group(part, "billing")["replayed"] == N_REPLAYED - 5
    assert [(x["ids_in_window"], x["id_runs"]) for x in part.to_dict()["replays"]] == \
        [(N_REPLAYED - 5, [[s.replayed_ids[5], s.replayed_ids[-1]]])]
    # tiny buckets force every level of the drill-down (and the per-sub-bucket correction): same result
    tiny = s.reconcile(bucket_bits=4, sub_bits=2)
    assert tiny.verdict is Verdict.PROVEN and counts(tiny, "billing") == (40, 40, 0, 0, N_REPLAYED, 0)
    md5 = s.reconcile(algorithm="md5", bucket_bits=5, sub_bits=2)
    assert md5.verdict is Verdict.PROVEN and counts(md5, "shipping") == (40, 40, 0, 0, N_REPLAYED, 0)

    # The CLI: exit 0, the signed report verifies, the views say "replayed"
    url = s.producer.url.render_as_string(hide_password=False)
    out, html = tmp_path / "report.json", tmp_path / "report.html"
    env = {"OUTBOX_REPORT_HMAC_KEY": "an-auditors-key-0123", "COLUMNS": "200"}
    res = CliRunner().invoke(app, ["reconcile", "--database-url", url, "--inbox-database-url",
                                   s.consumer.url.render_as_string(hide_password=False), "--inbox-database-url", url,
                                   "--grace", "0", "--sign", "-o", str(out), "--html", str(html)], env=env)
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].endswith(f"{2 * N_REPLAYED} replayed (audited)")
    assert f"replay #{s.audit_id} by jane (INC-4711)" in res.output
    assert json.loads(out.read_text())["format"] == "kafka-outbox/reconcile-report/v3"
    assert "<h2>Replays</h2><ul><li>replay #" in html.read_text()
    v = CliRunner().invoke(app, ["verify", str(out)], env=env)
    assert v.exit_code == 0 and "HMAC signature verified" in v.output, v.output
    # `outbox trace` tells the replay's copy apart too
    t = CliRunner().invoke(app, ["trace", str(s.row(s.replayed_ids[0]).event_id), "--database-url", url,
                                 "--inbox-database-url", s.consumer.url.render_as_string(hide_password=False)],
                           env={"COLUMNS": "250"})
    assert t.exit_code == 0, t.output
    assert f"replayed     by replay #{s.audit_id} (jane (INC-4711)" in t.output
    assert t.output.count("(the replay's copy)") == 2, t.output


def test_a_copy_no_replay_explains_is_still_duplicated(replayed: Replayed) -> None:
    s = replayed
    outside = s.row(s.replayed_ids[0] - 3)  # published once, never replayed
    inside = s.row(s.replayed_ids[4])  # replayed once: a third copy is one too many
    send(s.bootstrap, [outside, inside])  # copies at new offsets, as a relay without exactly-once would
    s.consume("billing", received=2, copies=2)
    r = s.reconcile()
    assert r.verdict is Verdict.DISCREPANCIES
    assert counts(r, "billing") == (40, 40, 0, 2, N_REPLAYED - 1, 0)
    dup = named(r, "billing", Kind.DUPLICATED)
    assert set(dup) == {outside.id, inside.id}
    assert "replay_audits" not in dup[outside.id]
    assert dup[inside.id]["replay_audits"] == [s.audit_id]
    assert f"3 copies in Kafka, but the first publication and replay #{s.audit_id} account for 2" in \
        str(dup[inside.id]["detail"])
    assert inside.id not in named(r, "billing", Kind.REPLAYED)
    assert counts(r, "shipping") == (40, 40, 0, 0, N_REPLAYED, 0), "shipping has not read the copies yet"
    assert r.to_dict()["verdict_line"].startswith("verdict: DISCREPANCIES — 40 events, 2 consumer groups, 0 missing, "
                                                  "2 duplicated")
    url = s.producer.url.render_as_string(hide_password=False)
    res = CliRunner().invoke(app, ["reconcile", "--database-url", url, "--inbox-database-url",
                                   s.consumer.url.render_as_string(hide_password=False), "--inbox-database-url", url,
                                   "--grace", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    t = CliRunner().invoke(app, ["trace", str(inside.event_id), "--database-url", url, "--inbox-database-url",
                                 s.consumer.url.render_as_string(hide_password=False)], env={"COLUMNS": "250"})
    assert t.exit_code == 0 and "(the replay's copy)" in t.output, "shipping: one copy, one replay"
    [billing] = [line for line in t.output.splitlines() if "acknowledged by billing" in line]
    assert "also received from" in billing and "(the replay's copy)" not in billing, "two copies, one replay"
