"""The stack is real: Kafka transactions, replicated durability under SIGKILL, Postgres crash recovery."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from stack.env import Stack, start_postgres
from stack.kafka import KafkaCluster
from stack.process import StackError
from stack.verify import console_consume, consume_all, find_hanging
from tests.conftest import create_topic


def test_read_committed_sees_only_committed_transactions(bootstrap: str, topic: str) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"smoke-{uuid.uuid4()}", "log_level": 3})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"k{i}".encode(), value=f"committed-{i}".encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=f"k{i}".encode(), value=f"aborted-{i}".encode())
    p.flush(30)
    p.abort_transaction(30)

    seen = sorted(r.value for r in consume_all(bootstrap, [topic]) if r.value is not None)
    assert seen == [f"committed-{i}".encode() for i in range(5)]
    uncommitted = consume_all(bootstrap, [topic], isolation="read_uncommitted")
    assert len(uncommitted) == 10, "the aborted records are in the log; only read_committed hides them"
    # Kafka's own ConsoleConsumer agrees, independently of librdkafka
    lines = console_consume(bootstrap, topic, expected=5, timeout_ms=15000)
    assert sorted(ln.split("\t")[-1] for ln in lines) == [f"committed-{i}" for i in range(5)]
    assert find_hanging(bootstrap, [1]) == []


@pytest.mark.cluster
def test_acks_all_records_survive_sigkill_of_a_broker(cluster3: KafkaCluster) -> None:
    from confluent_kafka import Producer

    name = f"durable-{uuid.uuid4().hex[:8]}"
    cluster3.create_topic(name, partitions=3)
    acked: set[bytes] = set()
    failed: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            acked.add(msg.value())  # type: ignore[attr-defined]
        else:
            failed.append(str(err))

    p = Producer({"bootstrap.servers": cluster3.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "log_level": 3, "message.timeout.ms": 60000})
    victim = cluster3.node(2)
    n = 0
    deadline = time.monotonic() + 120
    while n < 6000 and time.monotonic() < deadline:
        p.produce(name, key=str(n % 50).encode(), value=str(n).encode(), on_delivery=on_delivery)
        n += 1
        if n == 2000:
            victim.kill()  # SIGKILL mid-stream; writes continue against the remaining ISR (min.insync 2)
        p.poll(0)
        if n % 200 == 0:
            p.flush(60)
    p.flush(60)
    assert victim.running() is False and len(acked) >= 4000, f"acked {len(acked)}, errors {failed[:3]}"
    cluster3.start_node(2)
    seen = {r.value for r in consume_all(cluster3.bootstrap, [name], timeout=90, cluster=cluster3)}
    lost = acked - seen
    assert not lost, f"{len(lost)} acknowledged records are missing after the broker came back"


def test_postgres_survives_immediate_mode_restart(tmp_path: Path) -> None:
    pg = start_postgres(tmp_path)
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as c:
            c.execute("CREATE TABLE t (id int primary key, v text)")
            c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
        uncommitted = psycopg.connect(pg.dsn())
        uncommitted.execute("INSERT INTO t VALUES (5000, 'never committed')")
        pg.kill_immediate()  # no checkpoint: the next start replays the WAL
        uncommitted.close()
        pg.start()
        with psycopg.connect(pg.dsn()) as c:
            row = c.execute("SELECT count(*), max(id) FROM t").fetchone()
        assert row == (1000, 1000)
    finally:
        pg.stop()


def test_a_broker_killed_mid_test_fails_within_the_deadline(tmp_path: Path, stack: Stack) -> None:
    """A reader waiting on a broker that dies gets a clear error before its deadline, never a hang."""
    if stack.external:
        pytest.fail("this test controls its own broker and needs the self-started stack", pytrace=False)
    c = KafkaCluster(1, home=tmp_path / "victim")
    c.start()
    try:
        name = f"v-{uuid.uuid4().hex[:8]}"
        create_topic(c.bootstrap, name, partitions=1)
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": c.bootstrap, "transactional.id": "victim", "log_level": 0})
        p.init_transactions(30)
        p.begin_transaction()
        p.produce(name, value=b"x")
        p.flush(10)  # an open transaction holds the LSO back, so the reader must wait...
        c.node(1).kill()  # ...and then the broker dies under it
        started = time.monotonic()
        with pytest.raises(StackError) as info:
            consume_all(c.bootstrap, [name], timeout=8, cluster=c)
        assert time.monotonic() - started < 20
        assert "not running: [1]" in str(info.value)
    finally:
        c.stop()
