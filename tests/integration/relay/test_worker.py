"""The shard worker against the real database with a programmable fake Kafka: recovery, poison rows, DLQ,
held keys, transient retries and DB-side fencing. (Real-Kafka behaviour is in test_relay_process/tests/faults.)"""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from chaos.faulty_relay import Broken, FaultHooks, FaultSettings
from outbox.errors import KafkaUnavailableError, LeaseLostError, OutboxCollisionError, PermanentPublishError
from outbox.store.relay import Mark, RelayStore
from relay import checkpoint, identity
from relay.config import RelaySettings
from relay.hooks import NO_HOOKS, Hooks, InFlight, Step
from relay.kafka.lanes import LaneTransport
from relay.metrics import Metrics
from relay.ports import Transport
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

    def __init__(self, store: RelayStore, s: RelaySettings, kafka: FakeKafka, lanes: int = 1,
                 hooks: Hooks = NO_HOOKS) -> None:
        self.kafka = kafka
        s = identity.resolve(s, store)  # as the relay does once the database answers
        self.settings = s
        got = store.acquire(s.instance_id, list(range(SHARDS)), 30)

        def transport(sh: int) -> Transport:
            # As relay.kafka.shard_transport builds it (ADR 017): `lanes` producers whose transactions alternate,
            # and the second id fenced at every init even when it is not used.
            fakes = [FakeTransport(kafka, sh * 10 + n) for n in range(2)]
            return LaneTransport(fakes[:lanes], fence_only=fakes[lanes:])

        self.workers = [ShardWorker(sh, got[sh], settings=s, store=store, transport_factory=transport,
                                    checkpoints=FakeCheckpointLog(kafka), metrics=Metrics(), hooks=hooks)
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


@pytest.mark.parametrize("lanes", [1, 2])
def test_commit_whose_ack_was_lost_is_marked_from_the_checkpoint_not_resent(fresh_db: str, store: RelayStore,
                                                                             lanes: int,
                                                                             topic: str) -> None:
    write_events(fresh_db, topic, 120, keys=12)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("lost-ack: commit timed out")])
    r = Relay(store, settings(fresh_db), k, lanes)
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)
    assert k.inits > SHARDS * 2, "the worker re-initialised its producers after the unknown commit"


@pytest.mark.parametrize("lanes", [1, 2])
def test_recovery_that_cannot_learn_the_checkpoint_end_publishes_nothing_until_it_can(
        fresh_db: str, store: RelayStore, lanes: int, topic: str) -> None:
    # A committed batch whose ack was lost, then the re-initialised producer's recovery probe fails twice (the
    # checkpoint partition's leader is gone): the worker must not claim before a probe succeeds and recovery has
    # marked that batch, or it would send it again.
    write_events(fresh_db, topic, 120, keys=12)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("lost-ack: commit timed out")], probe_failures_after_lost_ack=2)
    r = Relay(store, settings(fresh_db), k, lanes)
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)
    assert not k.fail_probe and k.inits >= (SHARDS + 3) * 2, "the re-init's probe failed twice, then recovery ran"


@pytest.mark.parametrize("lanes", [1, 2])
def test_transient_commit_failure_is_retried_without_loss(fresh_db: str, store: RelayStore, lanes: int,
                                                          topic: str) -> None:
    write_events(fresh_db, topic, 100, keys=7)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("broker down")] * 3)
    Relay(store, settings(fresh_db), k, lanes).drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)


@pytest.mark.parametrize("lanes", [1, 2])
def test_poison_row_is_dead_lettered_its_key_held_and_other_keys_flow(fresh_db: str, store: RelayStore,
                                                                     lanes: int,
                                                                     topic: str) -> None:
    write_events(fresh_db, topic, 60, keys=6)
    poison = int(scalar(fresh_db, "SELECT min(id) FROM outbox.event WHERE key = 'k2'"))  # type: ignore[arg-type]
    k = FakeKafka(broker_refuse={poison})
    Relay(store, settings(fresh_db), k, lanes).drain(fresh_db)
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


# --- the claim floor (relay/floor.py, ADR 015) ---------------------------------------------------------------
def _floors(r: Relay) -> list[int]:
    return [w._floor.floor for w in r.workers]  # white-box: the floor must really have moved


def _key_order_kept(kafka: FakeKafka, url: str) -> None:
    """Each key's rows reached Kafka in id order (= per-key commit order); the first copy of each counts."""
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    with eng.connect() as c:
        keys: dict[int, bytes | None] = {int(i): k for i, k in c.execute(sa.text("SELECT id, key FROM outbox.event"))}
    seen: dict[bytes, int] = {}
    for rid in dict.fromkeys(kafka.published()):
        k = keys[rid]
        assert k is None or seen.get(k, 0) < rid, f"row {rid} of key {k!r} published after row {seen.get(k)}"
        if k is not None:
            seen[k] = rid


def test_floor_does_not_pass_a_row_whose_transaction_is_still_open(fresh_db: str, store: RelayStore,
                                                                  topic: str) -> None:
    import outbox

    eng = sa.create_engine(fresh_db)
    with eng.connect() as late:
        tx = late.begin()
        outbox.enqueue(late, outbox.Event(topic=topic, type="t", key="late", data={"n": 0}))
        late_id = int(late.execute(sa.text("SELECT max(id) FROM outbox.event")).scalar_one())
        write_events(fresh_db, topic, 800, keys=16)  # higher ids, committed first
        k = FakeKafka()
        r = Relay(store, settings(fresh_db), k)
        r.drain(fresh_db)
        assert pending(fresh_db) == 0 and late_id not in k.published()
        assert max(_floors(r)) < late_id, "an open transaction with a lower id holds every floor back"
        tx.commit()
    write_events(fresh_db, topic, 800, keys=16, key_prefix="after")
    r.drain(fresh_db)
    assert pending(fresh_db) == 0 and late_id in k.published()
    published_once(k, fresh_db)
    assert min(_floors(r)) > late_id, "afterwards the floors rise past it (the test exercised them)"
    eng.dispose()


def test_floor_waits_for_a_transaction_whose_xid_is_above_every_completed_one(fresh_db: str, store: RelayStore,
                                                                              topic: str) -> None:
    """The case that withdrew the first floor (ADR 015): writer A takes its xid after writer B, draws a lower id
    than B, and is still open when B commits and the relay claims B's row. No transaction above A's xid has
    completed, so A is below no snapshot's xmax and in no snapshot's in-progress list; a floor proven with the
    snapshot's xmax passed A's row and never published it. The claim's own xid (its horizon) is above A's."""
    import outbox
    from outbox.event import shard_for

    r = Relay(store, settings(fresh_db), FakeKafka())  # leases first: their xids must not complete after A's
    r.drain(fresh_db)
    shard = shard_for(topic, b"late", uuid.uuid4(), SHARDS)
    peers = [k for k in (f"b{i}" for i in range(200)) if shard_for(topic, k.encode(), uuid.uuid4(), SHARDS) == shard]
    w = r.workers[shard]
    eng = sa.create_engine(fresh_db)

    def ev(key: str) -> outbox.Event:
        return outbox.Event(topic=topic, type="t", key=key, data={"k": key})

    with eng.connect() as a, eng.connect() as b:
        tb = b.begin()
        b.execute(sa.text("SELECT pg_current_xact_id()"))  # B's xid first...
        ta = a.begin()
        late_id = outbox.enqueue(a, ev("late"))[0].id  # ...then A's, and A draws the lower id
        outbox.enqueue(b, ev(peers[0]))
        tb.commit()
        w.run_once()  # claims and publishes B's row while A is open
        with eng.begin() as c:
            outbox.enqueue(c, ev(peers[1]))  # a row for a second claim to see
        w.run_once()
        assert w._floor.floor < late_id, "the floor passed a row whose transaction is still open"
        ta.commit()
    for _ in range(3):
        w.run_once()
    assert late_id in r.kafka.published() and pending(fresh_db) == 0
    published_once(r.kafka, fresh_db)
    eng.dispose()


def test_dlq_retry_and_replay_below_the_floor_are_claimed_in_key_order(fresh_db: str, store: RelayStore,
                                                                      topic: str) -> None:
    from outbox.store import dead_letters, ops

    write_events(fresh_db, topic, 800, keys=16)
    poison = int(scalar(fresh_db, "SELECT min(id) FROM outbox.event WHERE key = 'k2'"))  # type: ignore[arg-type]
    k = FakeKafka(broker_refuse={poison})
    r = Relay(store, settings(fresh_db), k)
    r.drain(fresh_db)
    write_events(fresh_db, topic, 800, keys=16, key_prefix="more")
    r.drain(fresh_db)
    shard = int(scalar(fresh_db, "SELECT shard FROM outbox.event WHERE id = %s", poison))  # type: ignore[arg-type]
    held = int(scalar(fresh_db, "SELECT max(id) FROM outbox.event WHERE key = 'k2'"))  # type: ignore[arg-type]
    assert _floors(r)[shard] > held, "the floor passed the held key's rows (else this test proves nothing)"

    k.broker_refuse.clear()  # the operator fixed the cause
    eng = sa.create_engine(fresh_db)
    with eng.begin() as c:
        dl = int(c.execute(sa.text("SELECT id FROM outbox.dead_letter WHERE event_pk = :p"),
                           {"p": poison}).scalar_one())
        assert dead_letters.resolve_dead_letter(c, dl, dead_letters.Resolution.RETRIED, "test",
                                              shards=SHARDS) is dead_letters.ResolveOutcome.DONE
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)
    _key_order_kept(k, fresh_db)

    first = len(k.published())
    with eng.begin() as c:
        audit = ops.start_replay_audit(c, "test", ops.ReplaySelector(topic=topic))
        replayed = ops.replay_batch(c, ops.ReplaySelector(topic=topic), audit, 0, 100, shards=SHARDS)
    assert len(replayed) == 100
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    assert sorted(k.published()[first:]) == replayed, "every replayed row, once more"
    eng.dispose()


def test_another_outboxs_checkpoint_under_our_ids_is_refused_and_nothing_is_marked(fresh_db: str, store: RelayStore,
                                                                                  topic: str) -> None:
    # Two outboxes given the same OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX: the other one's last checkpoint of shard 0
    # names row ids that exist here too. Acting on it would mark our rows published with its offsets (a silent
    # loss); the worker must refuse, say which outboxes collide, and stop the process.
    write_events(fresh_db, topic, 40, keys=4)
    ids = [int(i) for i in str(scalar(fresh_db, "SELECT string_agg(id::text, ',') FROM outbox.event "
                                                "WHERE shard = 0")).split(",")]
    k = FakeKafka()
    r = Relay(store, settings(fresh_db, transactional_id_prefix="shared"), k)
    other = identity.OutboxIdentity("999", "billing", "outbox")
    k.checkpoints[checkpoint.key_for("shared-0")] = [
        checkpoint.encode(other, 0, 4, "billing-relay", [Mark(i, 0, n) for n, i in enumerate(ids)])]
    with pytest.raises(OutboxCollisionError) as caught:
        r.workers[0].run_once()
    text = str(caught.value)
    assert "database 'billing'" in text and f"database {fresh_db.rsplit('/', 1)[1]!r}" in text
    assert "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX='shared'" in text
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL") == 0
    assert k.published() == [], "nothing was sent either"
    assert r.workers[0].run(threading.Event()) is Exit.COLLISION and r.workers[0].fatal is not None
    # The same record written by this outbox is recovered as usual (the check is the identity, not the key).
    own = identity.read(r.settings, store)
    k.checkpoints[checkpoint.key_for("shared-0")].append(
        checkpoint.encode(own, 0, 4, "w0", [Mark(i, 0, n) for n, i in enumerate(ids)]))
    r.workers[0].close()
    assert r.workers[0].run_once().claimed == 0, "recovery marked the shard's rows from its own checkpoint"
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE shard = 0 AND published_at IS NULL") == 0


def test_a_previous_format_checkpoint_that_cannot_be_checked_never_stalls_the_shard(
        fresh_db: str, store: RelayStore, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Upgrading under an authorizer that denies READ on the event topics: the old record cannot be checked
    # against Kafka. It is left unused (its rows may be sent once more), never retried forever.
    write_events(fresh_db, topic, 40, keys=4)
    ids = [int(i) for i in str(scalar(fresh_db, "SELECT string_agg(id::text, ',') FROM outbox.event "
                                                "WHERE shard = 0")).split(",")]
    k = FakeKafka()
    k.checkpoints[checkpoint.legacy_key_for(0)] = [json.dumps(
        {"v": 1, "shard": 0, "epoch": 1, "owner": "old", "rows": [[i, 0, n] for n, i in enumerate(ids)]}).encode()]

    def denied(self: FakeCheckpointLog, positions: object) -> dict[tuple[str, int, int], str]:
        raise PermanentPublishError("TOPIC_AUTHORIZATION_FAILED: Topic authorization failed")

    monkeypatch.setattr(FakeCheckpointLog, "event_ids_at", denied)
    r = Relay(store, settings(fresh_db), k)
    assert r.workers[0].run_once().published == len(ids), "the shard publishes instead of retrying the check"
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE shard = 0 AND published_at IS NULL") == 0


def test_a_shard_does_not_fence_its_open_transaction_while_one_of_its_partitions_has_no_leader(
        fresh_db: str, store: RelayStore, topic: str) -> None:
    # Fencing aborts the previous producer's open transaction, and Kafka drops the abort marker of a partition
    # without a leader (tests/faults/relay/test_leaderless_partitions.py): the shard waits for the leader first.
    write_events(fresh_db, topic, 20, keys=4)
    k = FakeKafka()
    k.leaderless = {f"{topic}-1"}
    r = Relay(store, settings(fresh_db), k)
    w = r.workers[next(sh for sh in range(SHARDS) if scalar(
        fresh_db, f"SELECT count(*) FROM outbox.event WHERE shard = {sh}"))]
    with pytest.raises(KafkaUnavailableError, match=rf"until these partitions have a leader again: {topic}-1"):
        w.run_once()
    assert k.inits == 0, "no producer was initialised (nothing fenced) while the partition had no leader"
    k.leaderless = set()
    assert w.run_once().published > 0


class RecordingHooks:
    """Hooks (relay/hooks.py) that note, at each step, how many of the step's rows the table calls published and
    how many Kafka has committed. Armed at MID_PRODUCE, so the worker flushes there as for a fault test."""

    def __init__(self, url: str, kafka: FakeKafka) -> None:
        self.url, self.kafka = url, kafka
        self.seen: list[tuple[str, int, int, int]] = []  # step, rows, marked, committed in Kafka

    def batch_started(self) -> None:
        self.seen.append(("batch_started", 0, 0, 0))

    def armed(self, step: Step) -> bool:
        return step is Step.MID_PRODUCE

    def at(self, step: Step, batch: InFlight) -> None:
        ids = ",".join(map(str, batch.ids))
        marked = scalar(self.url, f"SELECT count(*) FROM outbox.event WHERE id IN ({ids}) "
                                  "AND published_at IS NOT NULL")
        self.seen.append((step.value, len(batch.ids), int(marked),  # type: ignore[call-overload]
                          len(set(batch.ids) & set(self.kafka.published()))))


def _busy_shard(url: str) -> int:
    return next(sh for sh in range(SHARDS) if scalar(url, f"SELECT count(*) FROM outbox.event WHERE shard = {sh}"))


def test_the_worker_calls_its_hooks_at_each_step_and_marks_only_after_the_kafka_commit(
        fresh_db: str, store: RelayStore, topic: str) -> None:
    write_events(fresh_db, topic, 40, keys=8)
    k = FakeKafka()
    hooks = RecordingHooks(fresh_db, k)
    w = Relay(store, settings(fresh_db), k, hooks=hooks).workers[_busy_shard(fresh_db)]
    n = w.run_once().published
    assert n > 0
    assert hooks.seen == [("batch_started", 0, 0, 0), ("before_produce", n, 0, 0), ("mid_produce", n, 0, 0),
                          ("after_commit", n, 0, n), ("mid_mark", n, 0, n)]


def test_the_fault_suites_broken_relay_loses_the_batch_it_marked_before_a_failed_commit(
        fresh_db: str, store: RelayStore, topic: str) -> None:
    # The broken protocol is injected (chaos/faulty_relay.py), not a mode of the relay: proven here to lose.
    write_events(fresh_db, topic, 40, keys=8)
    k = FakeKafka(fail_commit=[KafkaUnavailableError("broker down")])  # the first transaction never commits
    hooks = FaultHooks(FaultSettings(broken=Broken.MARK_BEFORE_COMMIT), mark_early=store)
    Relay(store, settings(fresh_db), k, hooks=hooks).drain(fresh_db)
    assert pending(fresh_db) == 0
    marked = int(scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NOT NULL"))  # type: ignore[call-overload]
    assert marked == 40 and 0 < len(k.published()) < 40, "the table says published, Kafka never got the batch"
