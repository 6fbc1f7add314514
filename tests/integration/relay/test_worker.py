"""The shard worker against the real database with a programmable fake Kafka: recovery, poison rows, DLQ,
held keys, transient retries and DB-side fencing. (Real-Kafka behaviour is in test_relay_process/tests/faults.)"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from outbox.errors import KafkaUnavailableError, LeaseLostError
from outbox.store.relay import RelayStore
from relay.config import RelaySettings
from relay.faults import Faults
from relay.metrics import Metrics
from relay.worker import Exit, ShardWorker
from tests.integration.relay.harness import pending, scalar, write_events
from tests.unit.relay.fakes import FakeCheckpointLog, FakeKafka, FakeTransport

SHARDS = 8


@pytest.fixture
def store(fresh_db: str) -> Iterator[RelayStore]:
    eng = sa.create_engine(fresh_db, pool_size=4)
    s = RelayStore(eng)
    s.ensure_leases(SHARDS)
    yield s
    eng.dispose()


def settings(url: str, **kw: object) -> RelaySettings:
    return RelaySettings.load({"instance_id": "w1", "batch_size": 50, "max_attempts": 3, "retry_initial_s": 0.01,
                               "retry_max_s": 0.05, **kw}, environ={"OUTBOX_DATABASE_URL": url,
                                                                   "KAFKA_BOOTSTRAP_SERVERS": "unused:1"})


class Relay:
    """All shards' workers of one instance, driven by run_once (no threads)."""

    def __init__(self, store: RelayStore, s: RelaySettings, kafka: FakeKafka) -> None:
        self.kafka = kafka
        got = store.acquire(s.instance_id, list(range(SHARDS)), 30)
        self.workers = [ShardWorker(sh, got[sh], settings=s, store=store,
                                    transport_factory=lambda sh: FakeTransport(kafka, sh),
                                    checkpoints=FakeCheckpointLog(kafka), metrics=Metrics(), faults=Faults())
                        for sh in range(SHARDS)]

    def drain(self, url: str, rounds: int = 200) -> None:
        for _ in range(rounds):
            for w in self.workers:
                with contextlib.suppress(KafkaUnavailableError):
                    w.run_once()
            if pending(url) == 0:
                return


def published_once(kafka: FakeKafka, url: str) -> None:
    ids = kafka.published()
    assert len(ids) == len(set(ids)), "a row was published twice"
    marked = {int(r) for r in str(scalar(url, "SELECT string_agg(id::text, ',') FROM outbox.event "
                                             "WHERE published_at IS NOT NULL") or "").split(",") if r}
    assert marked == set(ids)


def test_commit_whose_ack_was_lost_is_marked_from_the_checkpoint_not_resent(fresh_db: str, store: RelayStore,
                                                                             topic: str) -> None:
    write_events(fresh_db, topic, 120, keys=12)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("lost-ack: commit timed out")])
    r = Relay(store, settings(fresh_db), k)
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)
    assert k.inits > SHARDS, "the worker re-initialised its producer after the unknown commit"


def test_recovery_that_cannot_learn_the_checkpoint_end_publishes_nothing_until_it_can(
        fresh_db: str, store: RelayStore, topic: str) -> None:
    # A committed batch whose ack was lost, then the re-initialised producer's recovery probe fails twice (the
    # checkpoint partition's leader is gone): the worker must not claim before a probe succeeds and recovery has
    # marked that batch, or it would send it again.
    write_events(fresh_db, topic, 120, keys=12)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("lost-ack: commit timed out")], probe_failures_after_lost_ack=2)
    r = Relay(store, settings(fresh_db), k)
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)
    assert not k.fail_probe and k.inits >= SHARDS + 3, "the re-init's probe failed twice, then recovery ran"


def test_transient_commit_failure_is_retried_without_loss(fresh_db: str, store: RelayStore, topic: str) -> None:
    write_events(fresh_db, topic, 100, keys=7)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("broker down")] * 3)
    Relay(store, settings(fresh_db), k).drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)


def test_poison_row_is_dead_lettered_its_key_held_and_other_keys_flow(fresh_db: str, store: RelayStore,
                                                                     topic: str) -> None:
    write_events(fresh_db, topic, 60, keys=6)
    poison = int(scalar(fresh_db, "SELECT min(id) FROM outbox.event WHERE key = 'k2'"))  # type: ignore[arg-type]
    k = FakeKafka(broker_refuse={poison})
    Relay(store, settings(fresh_db), k).drain(fresh_db)
    dead = scalar(fresh_db, "SELECT count(*) FROM outbox.dead_letter WHERE event_pk = %s AND attempts = 3 "
                            "AND reason LIKE '%%TOO_LARGE%%'", poison)
    assert dead == 1
    held = scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE key = 'k2' AND published_at IS NULL "
                            "AND dead_at IS NULL")
    assert held == 9, "the later rows of the poisoned key wait behind it, in order"
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE key <> 'k2' AND published_at IS NULL") == 0
    published_once(k, fresh_db)
    innocent = scalar(fresh_db, "SELECT max(attempts) FROM outbox.event WHERE id <> %s", poison)
    assert innocent == 0, "suspects that were only batch-mates of the poison row get no attempt counted"
    st = store.status()
    assert [(h.topic, h.key) for h in st.held_keys] == [(topic, b"k2")] and st.dead_letters_open == 1


def test_client_refused_row_goes_to_dlq_after_bounded_attempts(fresh_db: str, store: RelayStore, topic: str) -> None:
    write_events(fresh_db, topic, 30, keys=3)
    bad = int(scalar(fresh_db, "SELECT max(id) FROM outbox.event WHERE key = 'k1'"))  # type: ignore[arg-type]
    k = FakeKafka(sync_refuse={bad})
    Relay(store, settings(fresh_db, max_attempts=2), k).drain(fresh_db)
    assert scalar(fresh_db, "SELECT attempts FROM outbox.dead_letter WHERE event_pk = %s", bad) == 2
    assert pending(fresh_db) == 0 and len(k.published()) == 29


def test_stale_owner_marks_are_refused_and_the_worker_stops(fresh_db: str, store: RelayStore, topic: str) -> None:
    write_events(fresh_db, topic, 40, keys=40)
    s = settings(fresh_db)
    k = FakeKafka()
    r = Relay(store, s, k)
    shard = int(scalar(fresh_db, "SELECT shard FROM outbox.event LIMIT 1"))  # type: ignore[arg-type]
    w = r.workers[shard]
    w.run_once()  # the producer is initialised; the shard drained once
    write_events(fresh_db, topic, 40, keys=40, key_prefix="again")
    store.release("w1", {shard: w.epoch})
    assert store.acquire("w2", [shard], 30)  # another instance takes over: epoch bumped
    with pytest.raises(LeaseLostError):
        w.run_once()
    stop = threading.Event()
    assert w.run(stop) is Exit.LEASE_LOST
