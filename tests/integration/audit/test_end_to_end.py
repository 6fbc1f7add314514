"""End to end with the real relay (``python -m relay``): write, relay (killed and restarted on the way), two
consumer groups in two databases, reconcile: proven, with checkpoints; then the same through the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from outbox.inbox import Inbox
from outbox.reconcile import ConsumerDatabase, Options, Verdict, reconcile
from outbox.schema import event
from relay.cli import app
from tests.integration.audit.helpers import write_orders

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[3]


def start_relay(url: str, bootstrap: str, log: Path, prefix: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OUTBOX_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
           "OUTBOX_RELAY_HTTP_PORT": "-1", "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": prefix,
           "OUTBOX_RELAY_CHECKPOINT_TOPIC": f"{prefix}-checkpoints", "OUTBOX_RELAY_LOG_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "relay"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def published(engine: sa.Engine) -> int:
    with engine.connect() as c:
        return int(c.execute(sa.select(sa.func.count()).where(event.c.published_at.is_not(None))).scalar_one())


def test_relay_and_two_groups_reconcile_to_zero_loss(producer_engine: sa.Engine, consumer_engine: sa.Engine,
                                                       bootstrap: str, topic: str, tmp_path: Path) -> None:
    url = producer_engine.url.render_as_string(hide_password=False)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "relay.log"
    write_orders(producer_engine, topic, 300, keys=7)
    relay = start_relay(url, bootstrap, log, prefix)
    groups = {"billing": Inbox(consumer_engine, "billing", [topic], lambda c, e: None, bootstrap=bootstrap),
              "shipping": Inbox(producer_engine, "shipping", [topic], lambda c, e: None, bootstrap=bootstrap)}
    got = dict.fromkeys(groups, 0)
    try:
        deadline = time.monotonic() + 90
        while published(producer_engine) < 100:  # consume meanwhile: each poll waits up to 1 s for records
            assert time.monotonic() < deadline and relay.poll() is None, log.read_text()[-3000:]
            for g, ib in groups.items():
                got[g] += ib.run_once().received
        os.killpg(relay.pid, signal.SIGKILL)  # mid-stream: exactly-once recovery happens on restart
        relay.wait(30)
        write_orders(producer_engine, topic, 200, keys=7)
        relay = start_relay(url, bootstrap, log, prefix)
        while min(got.values()) < 500:
            assert time.monotonic() < deadline + 60, f"received {got}; relay log:\n{log.read_text()[-3000:]}"
            for g, ib in groups.items():
                got[g] += ib.run_once().received
    finally:
        for ib in groups.values():
            ib.close()
        if relay.poll() is None:
            os.killpg(relay.pid, signal.SIGTERM)
            relay.wait(60)
    assert got == {"billing": 500, "shipping": 500}, "the relay published something twice"

    consumers = [ConsumerDatabase(consumer_engine), ConsumerDatabase(producer_engine)]
    report = reconcile(producer_engine, consumers, Options(grace=timedelta(0), checkpoint=True))
    d = report.to_dict()
    assert report.verdict is Verdict.PROVEN, d
    assert d["verdict_line"] == ("verdict: zero loss proven — 500 events, 2 consumer groups, 0 missing, "
                                 "0 duplicated, 0 out of order")
    assert {g.group: (g.expected, g.checkpoint and g.checkpoint["expected"]) for g in report.groups} == \
        {"billing": (500, 500), "shipping": (500, 500)}

    res = CliRunner().invoke(app, ["reconcile", "--database-url", url, "--inbox-database-url",
                                   consumer_engine.url.render_as_string(hide_password=False),
                                   "--inbox-database-url", url, "--grace", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert res.output.strip().splitlines()[-1].startswith("verdict: zero loss proven — 500 events")
