"""Several outboxes on one Kafka cluster, as services share one in production.

* With default settings (no transactional-id prefix, the default checkpoint topic), two databases and two schemas
  of one database, each with two relays (one SIGKILLed on the way), publish every event exactly once, checked by
  the read_committed checker and by the reconciler. Row ids collide across the outboxes (each starts at 1), which
  is what made one relay mark another's rows published from the other's checkpoint before identities.
* A prefix deliberately shared by two outboxes is refused: the second relay exits 3 naming both, and marks nothing.
* An upgrade from checkpoints of the previous format (keyed by the bare shard, no identity): the in-doubt batch of
  the old relay is marked, not re-sent, and another outbox's old record under the same key is ignored.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

import outbox
from migrations import alembic_config
from outbox.inbox import Inbox
from outbox.reconcile import ConsumerDatabase, Options, Verdict, reconcile
from outbox.store.relay import RelayStore
from relay.config import RelaySettings
from relay.kafka import KafkaCheckpointLog, KafkaTransport
from relay.records import to_record
from stack.env import Stack
from tests.conftest import TEMPLATE_DB, _admin_exec, create_topic
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, scalar, verify, wait_until, write_events

pytestmark = pytest.mark.kafka
SHARDS = 4


@dataclass(frozen=True)
class Box:
    """One outbox: a database URL and a schema, and the topic its events go to."""

    url: str
    schema: str
    topic: str

    def env(self, bootstrap: str, **extra: str) -> dict[str, str]:
        return {"OUTBOX_DATABASE_URL": self.url, "OUTBOX_SCHEMA": self.schema, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "OUTBOX_SHARDS": str(SHARDS), "OUTBOX_RELAY_LOG_LEVEL": "INFO", **extra}

    def write(self, n: int, keys: int = 12) -> None:
        with _writer(self.schema):
            write_events(self.url, self.topic, n, keys=keys)

    def pending(self) -> int:
        return pending(self.url, self.schema)


@contextmanager
def _writer(schema: str) -> Iterator[None]:
    outbox.configure(schema=schema, shards=SHARDS)
    try:
        yield
    finally:
        outbox.configure()


@pytest.fixture
def second_db(stack: Stack) -> Iterator[str]:
    name = f"t_second_{uuid.uuid4().hex[:8]}"
    _admin_exec(stack, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    try:
        yield stack.url(name)
    finally:
        _admin_exec(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _topic(bootstrap: str) -> str:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, partitions=SHARDS)
    return name


def test_outboxes_sharing_a_cluster_with_default_settings_publish_everything_exactly_once(
        fresh_db: str, second_db: str, bootstrap: str, relays: list[RelayProcess], tmp_path: Path) -> None:
    command.upgrade(alembic_config(fresh_db, "second"), "heads")
    boxes = [Box(fresh_db, "outbox", _topic(bootstrap)), Box(second_db, "outbox", _topic(bootstrap)),
             Box(fresh_db, "second", _topic(bootstrap))]
    for b in boxes:
        b.write(150)
    procs = [[spawn(relays, b.env(bootstrap), tmp_path, f"box{i}-r{j}") for j in range(2)]
             for i, b in enumerate(boxes)]

    def logs() -> str:
        return "\n".join(f"--- {r.name}\n{r.logs(15)}" for ps in procs for r in ps)

    wait_until(lambda: all(b.pending() == 0 for b in boxes), 120, lambda: f"the first wave\n{logs()}")
    for ps in procs:
        ps[0].kill()  # SIGKILL: the survivor takes its shards over and recovers from the shared checkpoint topic
    for b in boxes:
        b.write(150)
    wait_until(lambda: all(b.pending() == 0 for b in boxes), 120, lambda: f"the second wave\n{logs()}")
    for ps in procs:
        assert ps[1].stop() == 0, ps[1].logs()
    prefixes = {line.split('"transactional_id_prefix": "')[1].split('"')[0]
                for ps in procs for r in ps for line in r.log.read_text().splitlines()
                if '"transactional_id_prefix": "' in line}
    assert len(prefixes) == len(boxes), f"one derived prefix per outbox, shared by its relays: {prefixes}"

    for b in boxes:
        v = verify(b.url, bootstrap, [b.topic], schema=b.schema, check_hanging=False, settle_s=3)
        assert v.clean and v.events == v.seen == 300, f"{b}: {v}"
        _reconciled(b, bootstrap, 300)


def _reconciled(b: Box, bootstrap: str, n: int) -> None:
    """The reconciler's check: a consumer group acknowledges into the outbox's own database; zero loss proven."""
    engine = sa.create_engine(b.url, poolclass=sa.pool.NullPool)
    inbox = Inbox(engine, "audit", [b.topic], lambda c, e: None, bootstrap=bootstrap, schema=b.schema)
    got = [0]

    def consumed() -> bool:
        got[0] += inbox.run_once().received
        return got[0] >= n

    try:
        wait_until(consumed, 90, lambda: f"the audit group to receive {b.topic} (got {got[0]})")
    finally:
        inbox.close()
    report = reconcile(engine, [ConsumerDatabase(engine, b.schema)], Options(grace=timedelta(0)), schema=b.schema)
    engine.dispose()
    assert report.verdict is Verdict.PROVEN and got[0] == n, report.to_dict()


def test_a_prefix_shared_by_two_outboxes_is_refused_and_nothing_is_marked(
        fresh_db: str, second_db: str, bootstrap: str, relays: list[RelayProcess], tmp_path: Path) -> None:
    a, b = Box(fresh_db, "outbox", _topic(bootstrap)), Box(second_db, "outbox", _topic(bootstrap))
    shared = {"OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": f"shared-{uuid.uuid4().hex[:8]}"}
    a.write(60)
    first = spawn(relays, a.env(bootstrap, **shared), tmp_path, "a")
    wait_until(lambda: a.pending() == 0, 90, lambda: f"outbox a to drain\n{first.logs()}")
    b.write(60)
    second = spawn(relays, b.env(bootstrap, **shared), tmp_path, "b")
    assert second.wait(120) == 3, second.logs()
    text = second.log.read_text()
    assert "two outboxes share OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX" in text, text[-3000:]
    for url in (fresh_db, second_db):
        assert f"database {url.rsplit('/', 1)[1]!r}" in text, "both outboxes are named"
    assert b.pending() == 60, "the refused relay marked nothing"
    assert verify(b.url, bootstrap, [b.topic], expect_all_published=False, check_hanging=False,
                  settle_s=1).seen == 0, "and sent nothing"
    a.write(20)  # the first outbox goes on (the second relay's start only fenced its producers once)
    wait_until(lambda: a.pending() == 0, 90, lambda: f"outbox a after the refusal\n{first.logs()}")
    v = verify(a.url, bootstrap, [a.topic], check_hanging=False, settle_s=2)
    assert v.clean and v.events == 80, str(v)


def _legacy_batch(box: Box, bootstrap: str, checkpoint_topic: str, shard: int) -> list[int]:
    """What a relay of the previous release left behind when killed between its commit and its mark: the shard's
    pending rows committed to Kafka with a version-1 checkpoint (key = the bare shard number), nothing marked."""
    s = RelaySettings.load({"transactional_id_prefix": f"legacy-{uuid.uuid4().hex[:6]}", "shards": SHARDS,
                            "checkpoint_topic": checkpoint_topic},
                           environ={"OUTBOX_DATABASE_URL": box.url, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    log = KafkaCheckpointLog(s)
    log.ensure(SHARDS)
    engine = sa.create_engine(box.url, poolclass=sa.pool.NullPool)
    rows = RelayStore(engine, box.schema).claim(shard, 1000)
    engine.dispose()
    t = KafkaTransport(s, shard)
    try:
        t.init()
        t.begin()
        for r in rows:
            t.send(to_record(r))
        marks = [[d.ref, d.partition, d.offset] for d in t.flush()]
        value = {"v": 1, "shard": shard, "epoch": 1, "owner": "old-relay", "rows": marks}
        t.send_checkpoint(log.partition_for(shard), str(shard).encode(), json.dumps(value).encode())
        t.commit()
    finally:
        t.close()
    return [r.id for r in rows]


def test_an_upgrade_marks_the_old_relays_in_doubt_batch_and_ignores_another_outboxs(
        fresh_db: str, second_db: str, bootstrap: str, relays: list[RelayProcess], tmp_path: Path) -> None:
    a, b = Box(fresh_db, "outbox", _topic(bootstrap)), Box(second_db, "outbox", _topic(bootstrap))
    checkpoints = {"OUTBOX_RELAY_CHECKPOINT_TOPIC": f"ckpt-{uuid.uuid4().hex[:8]}"}
    a.write(40)
    b.write(40)
    in_doubt = _legacy_batch(a, bootstrap, checkpoints["OUTBOX_RELAY_CHECKPOINT_TOPIC"], 1)
    assert in_doubt, "shard 1 of outbox a had rows"
    # Outbox b has rows with the same ids, pending in its own database; the old record names them too.
    assert scalar(b.url, "SELECT count(*) FROM outbox.event WHERE id = ANY(%s)", in_doubt) == len(in_doubt)
    ra = spawn(relays, a.env(bootstrap, **checkpoints), tmp_path, "a")
    rb = spawn(relays, b.env(bootstrap, **checkpoints), tmp_path, "b")
    wait_until(lambda: a.pending() == 0 and b.pending() == 0, 120,
               lambda: f"both outboxes to drain\n{ra.logs()}\n{rb.logs()}")
    ra.signal(signal.SIGTERM)
    rb.signal(signal.SIGTERM)
    assert ra.wait(60) == 0 and rb.wait(60) == 0
    for box in (a, b):
        v = verify(box.url, bootstrap, [box.topic], check_hanging=False, settle_s=2)
        assert v.clean and v.events == v.seen == 40, f"{box}: {v}"  # a: marked, not re-sent; b: all sent
    assert '"checkpoint_version": 1' in ra.log.read_text(), "a recovered its old in-doubt batch"
    assert "belongs to another outbox and is ignored" in rb.log.read_text(), rb.logs()
