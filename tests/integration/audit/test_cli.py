"""`outbox reconcile | verify | trace` through the real CLI (typer's CliRunner) against real databases."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from outbox.inbox import Inbox
from outbox.reconcile import seal
from outbox.schema import event, inbox
from relay.cli import app
from tests.conftest import create_topic
from tests.integration.audit.conftest import Scenario
from tests.integration.audit.helpers import publish_pending, send, write_orders

pytestmark = pytest.mark.kafka
KEY = "correct-horse-battery-staple-42"
runner = CliRunner()


def url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def outbox_cli(*args: str, key: str | None = KEY) -> tuple[int, str]:
    env = {"COLUMNS": "250", "OUTBOX_REPORT_HMAC_KEY": key or ""}
    res = runner.invoke(app, list(args), env=env)
    return res.exit_code, res.output


def dbs(s: Scenario) -> list[str]:
    return ["--database-url", url(s.producer), "--inbox-database-url", url(s.consumer),
            "--inbox-database-url", url(s.producer)]


def test_signed_json_and_html_reports_verify_and_any_edit_is_caught(scenario: Scenario, tmp_path: Path) -> None:
    rj, rh = tmp_path / "report.json", tmp_path / "report.html"
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "0", "--format", "json", "-o", str(rj),
                           "--html", str(rh), "--sign")
    assert code == 0, out
    d = json.loads(out)
    assert d["verdict"] == "proven" and d["events"] == 60 and d["integrity"]["hmac_sha256"]
    assert json.loads(rj.read_text()) == d
    html = rh.read_text()
    assert d["verdict_line"] in html and html.count("<svg") == 2 and "src=" not in html and "href=" not in html

    code, out = outbox_cli("verify", str(rj))
    assert code == 0 and "content hash and HMAC signature verified" in out, out

    edited = json.loads(rj.read_text())
    edited["groups"][0]["missing"] = 1
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    code, out = outbox_cli("verify", str(tmp_path / "edited.json"))
    assert code == 1 and "content hash mismatch" in out and "groups[billing]" in out, out

    stripped = seal({k: v for k, v in edited.items() if k != "integrity"})  # rehashed, signature dropped
    (tmp_path / "stripped.json").write_text(json.dumps(stripped))
    code, out = outbox_cli("verify", str(tmp_path / "stripped.json"))
    assert code == 1 and "not signed, but a key is configured" in out, out

    forged = seal({k: v for k, v in edited.items() if k != "integrity"}, b"someone-elses-key-123")
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    code, out = outbox_cli("verify", str(tmp_path / "forged.json"))
    assert code == 1 and "signed with another key" in out, out

    code, out = outbox_cli("verify", str(rj), key=None)
    assert code == 2 and "no key is configured" in out, out


def test_table_names_the_missing_event_and_exits_1(scenario: Scenario) -> None:
    with scenario.consumer.begin() as c:
        victim = c.execute(sa.delete(inbox).where(inbox.c.id == sa.select(sa.func.max(inbox.c.id))
                                                  .scalar_subquery()).returning(inbox.c.event_id)).scalar_one()
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "0")
    assert code == 1, out
    assert str(victim) in out and "never acknowledged" in out
    assert out.strip().splitlines()[-1].startswith("verdict: DISCREPANCIES — 60 events, 2 consumer groups, "
                                                   "1 missing, 0 duplicated, 0 out of order")


def test_trace_shows_the_journey_and_unknown_ids_are_clear(scenario: Scenario) -> None:
    with scenario.producer.connect() as c:
        row = c.execute(sa.select(event).order_by(event.c.id).limit(1)).one()
    code, out = outbox_cli("trace", str(row.event_id), *dbs(scenario))
    assert code == 0, out
    assert f"partition {row.kafka_partition} offset {row.kafka_offset}" in out and "written" in out
    assert "acknowledged by billing" in out and "acknowledged by shipping" in out
    code, out = outbox_cli("trace", str(row.id), "--database-url", url(scenario.producer), "--format", "json")
    assert code == 0 and json.loads(out)["event"]["event_id"] == str(row.event_id)

    code, out = outbox_cli("trace", str(uuid.uuid4()), *dbs(scenario))
    assert code == 1 and "unknown event" in out
    code, out = outbox_cli("trace", "not-an-id", *dbs(scenario))
    assert code == 2 and "neither an event id" in out


def test_could_not_run_and_config_errors(producer_engine: sa.Engine) -> None:
    code, out = outbox_cli("reconcile", "--database-url", url(producer_engine))
    assert code == 2 and "no consumer group has registered a subscription" in out, out
    code, out = outbox_cli("reconcile", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert code == 2 and "database unavailable" in out, out
    code, out = outbox_cli("reconcile", "--database-url", url(producer_engine), "--sign", key=None)
    assert code == 3 and "OUTBOX_REPORT_HMAC_KEY" in out, out


def test_reconcile_from_an_ack_topic_when_consumer_databases_are_out_of_reach(
        producer_engine: sa.Engine, consumer_engine: sa.Engine, new_database: Callable[[], str], bootstrap: str,
        topic: str) -> None:
    acks_topic = f"{topic}-acks"
    create_topic(bootstrap, acks_topic, partitions=3)
    write_orders(producer_engine, topic, 40, keys=4)
    rows = publish_pending(producer_engine, bootstrap)
    send(bootstrap, [rows[3]])  # published twice
    ib = Inbox(consumer_engine, "billing", [topic], lambda c, e: None, bootstrap=bootstrap, ack_topic=acks_topic)
    got, deadline = 0, time.monotonic() + 60
    while got < 41:
        assert time.monotonic() < deadline
        got += ib.run_once().received
    ib.close()
    code, out = outbox_cli("reconcile", "--database-url", url(producer_engine), "--ack-topic", acks_topic,
                           "--bootstrap-servers", bootstrap, "--scratch-database-url", new_database(),
                           "--grace", "0", "--format", "json")
    assert code == 1, out
    d = json.loads(out[out.index("{"):])
    [g] = d["groups"]
    assert (g["group"], g["expected"], g["acknowledged"], g["missing"], g["duplicated"], g["out_of_order"]) == \
        ("billing", 40, 40, 0, 1, 0)
    assert [f["event_id"] for f in g["findings"] if f["kind"] == "duplicated"] == [str(rows[3].event_id)]


def test_a_real_run_refuses_an_empty_window_and_a_report_it_cannot_write(scenario: Scenario, tmp_path: Path) -> None:
    # With a real database and groups, an inverted window used to be "zero loss proven — 0 events", exit 0.
    code, out = outbox_cli("reconcile", *dbs(scenario), "--from-id", "10", "--to-id", "5")
    assert code == 2 and "--from-id (10) is after --to-id (5)" in out and "proven" not in out, out

    # /dev/full passes the check before the run (it exists and is writable); the write itself fails (ENOSPC).
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "0", "-o", "/dev/full")
    assert code == 2 and "cannot write the report to /dev/full: No space left on device" in out, out
    assert "verdict: zero loss proven — 60 events" in out and "Traceback" not in out, out
    rj = tmp_path / "r.json"
    code, out = outbox_cli("reconcile", *dbs(scenario), "--grace", "0", "--format", "json", "-o", str(rj),
                           "--html", "/dev/full")
    assert code == 2 and "cannot write the report to /dev/full" in out, out
    assert json.loads(rj.read_text(encoding="utf-8"))["verdict"] == "proven"


def test_trace_with_an_unreachable_consumer_database_could_not_run(scenario: Scenario) -> None:
    with scenario.producer.connect() as c:
        eid = c.execute(sa.select(event.c.event_id).limit(1)).scalar_one()
    code, out = outbox_cli("trace", str(eid), "--database-url", url(scenario.producer), "--inbox-database-url",
                           "postgresql+psycopg://nobody@127.0.0.1:1/x")
    assert code == 2 and "database unavailable while tracing" in out, out  # 1 would mean "unknown event"
