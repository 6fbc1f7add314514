"""Through the REAL relay and Kafka: a retried dead letter is published before its held rows, in key order;
a replay re-publishes the same event ids in key order; the DSN password never shows in logs or metrics."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from stack.verify import consume_all
from tests.integration.ops.conftest import Cli, Db
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, verify, wait_until

pytestmark = pytest.mark.kafka
DB_PASSWORD = "Db-e2e-Pa55word"


def _published(db: Db, ids: list[int]) -> bool:
    return bool(db.scalar("SELECT bool_and(published_at IS NOT NULL) FROM outbox.event WHERE id = ANY(:ids)",
                          ids=ids))


def test_dlq_retry_and_replay_keep_key_order_through_the_relay(  # noqa: PLR0917 - fixtures
        db: Db, cli: Cli, topic: str, bootstrap: str, relay_env: dict[str, str], relays: list[RelayProcess],
        tmp_path: Path) -> None:
    evs = db.write(topic, ["k", "j", "k", "j", "k"])
    k = [e for e in evs if e.key == b"k"]
    j = [e for e in evs if e.key == b"j"]
    db.dead_letter(k[0].id, reason="Broker: Message size too large")
    env = {**relay_env, "OUTBOX_DATABASE_URL": db.url.replace("://postgres@", f"://postgres:{DB_PASSWORD}@")}
    relay = spawn(relays, env, tmp_path, "ops-e2e")

    wait_until(lambda: _published(db, [e.id for e in j]), 60, lambda: f"the free key to be published\n{relay.logs()}")
    assert not _published(db, [k[1].id]) and not _published(db, [k[2].id]), "k is held behind its dead letter"
    scraped: list[str] = []

    def held_key_gauges_set() -> bool:
        scraped[:] = [urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/metrics", timeout=10).read().decode()]
        return "outbox_relay_held_keys 1.0" in scraped[0] and "outbox_relay_dead_letters 1.0" in scraped[0]

    wait_until(held_key_gauges_set, 30, "the held-key and dead-letter gauges")
    metrics = scraped[0]

    (dl,) = json.loads(cli("dlq", "list", "--json", url=db.url).stdout)
    assert dl["held_behind"] == 2
    assert cli("dlq", "retry", str(dl["id"]), url=db.url).exit_code == 0
    wait_until(lambda: pending(db.url) == 0, 60, lambda: f"the retried key to drain\n{relay.logs()}")
    v = verify(db.url, bootstrap, [topic])
    assert v.clean, str(v)  # each event exactly once, every key in key_seq order (k: 1, 2, 3)

    res = cli("replay", "--topic", topic, "--from-id", str(k[0].id), url=db.url)
    assert res.exit_code == 0 and "re-queued 5 events" in res.stdout, res.output
    wait_until(lambda: pending(db.url) == 0, 60, lambda: f"the replay to drain\n{relay.logs()}")
    records = consume_all(bootstrap, [topic])
    seqs: dict[bytes, list[int]] = defaultdict(list)
    copies: dict[str, int] = defaultdict(int)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        seqs[r.key].append(int(r.header("outbox-key-seq") or 0))
        copies[(r.header("outbox-event-id") or b"").decode()] += 1
    assert seqs[b"k"] == [1, 2, 3, 1, 2, 3] and seqs[b"j"] == [1, 2, 1, 2], seqs
    assert set(copies) == {str(e.event_id) for e in evs} and set(copies.values()) == {2}, "same ids, twice"

    relay.stop()
    logs = relay.log.read_text()
    assert "relay started" in logs
    for text in (logs, metrics):
        assert DB_PASSWORD not in text
    assert "outbox_relay_held_keys 1.0" in metrics and "outbox_relay_dead_letters 1.0" in metrics


def test_a_relay_that_cannot_reach_the_database_does_not_print_the_password(
        relay_env: dict[str, str], tmp_path: Path) -> None:
    env = {**relay_env, "OUTBOX_DATABASE_URL": f"postgresql+psycopg://app:{DB_PASSWORD}@127.0.0.1:1/outbox",
           "OUTBOX_RELAY_STARTUP_WAIT_S": "1"}  # it waits for the database: bounded here, to read the whole log
    r = RelayProcess(env, tmp_path, "no-db").start()
    assert r.wait(60) == 2
    out = r.log.read_text()
    assert "database" in out and DB_PASSWORD not in out
