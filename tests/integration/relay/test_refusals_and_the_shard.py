"""What a refused topic or a refused checkpoint topic costs the rest of a shard (real Postgres, fake Kafka).

* A refused topic's backlog that fills whole claims must not starve the shard's other rows, and the claim floor
  must never pass the refused rows (a row the floor passes is never claimed again).
* A transaction refused as a whole because the *checkpoint* topic is refused is the producer's fault: no event
  row is charged for it.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest

from outbox.errors import KafkaUnavailableError, PublishError
from outbox.store.relay import RelayStore
from tests.integration.relay.harness import dsn, pending, scalar
from tests.integration.relay.test_worker import Relay, published_once, settings, store  # noqa: F401 - fixture
from tests.unit.relay.fakes import FakeKafka


def _rows(url: str, topic: str, keys: list[str]) -> list[int]:
    """Pending rows of shard 0 in one transaction, in id order (key_seq 1, 2, ... per key)."""
    seqs: dict[str, int] = {}
    out: list[int] = []
    with psycopg.connect(dsn(url)) as c:
        for k in keys:
            seqs[k] = seqs.get(k, 0) + 1
            got = c.execute("INSERT INTO outbox.event (event_id, topic, key, shard, payload, content_type, type, "
                            "source, time, headers, key_seq) VALUES (%s, %s, %s, 0, '\\x7b7d', 'application/json', "
                            "'t.e', 'urn:t', now(), '[]', %s) RETURNING id",
                            (uuid.uuid4(), topic, k.encode(), seqs[k])).fetchone()
            assert got is not None
            out.append(int(got[0]))
    return out


@pytest.mark.parametrize("keys", ["distinct", "one"])
def test_a_refused_topics_backlog_filling_the_claim_lets_the_rest_of_the_shard_flow(
        fresh_db: str, store: RelayStore, keys: str) -> None:  # noqa: F811 - the fixture
    s = settings(fresh_db, retry_max_s=600, retry_initial_s=60)  # the refused topic is not re-checked in this test
    refused = _rows(fresh_db, "gone", [f"g{i}" if keys == "distinct" else "g" for i in range(3 * s.batch_size)])
    healthy = _rows(fresh_db, "ok", ["a", "b", "a"])
    k = FakeKafka(missing_topics={"gone"})
    r = Relay(store, s, k)
    w = r.workers[0]
    res = w.run_once()
    assert k.published() == healthy, "the healthy rows behind a full claim of the refused topic published at once"
    assert res.published == 3 and not res.idle
    assert scalar(fresh_db, "SELECT max(attempts) FROM outbox.event") == 0, "a first sighting charges nothing"
    assert w.claim_floor < refused[0], "the floor stays below the refused topic's rows"
    # More healthy rows keep flowing while the refused topic waits.
    more = _rows(fresh_db, "ok", ["b", "c"])
    w.run_once()
    assert k.published() == healthy + more
    # The topic is created: every refused row is still claimable (the floor passed none) and goes out in order.
    k.missing_topics.clear()
    w._gate = type(w._gate)(0.0)  # re-check at once instead of after RETRY_MAX_S
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    assert k.published() == healthy + more + refused, "per-key order and nothing lost"
    published_once(k, fresh_db)


def _open_then_revoke_the_checkpoint(fresh_db: str, store: RelayStore, k: FakeKafka) -> Relay:  # noqa: F811
    r = Relay(store, settings(fresh_db, max_attempts=1), k)
    assert r.workers[0].run_once().claimed == 0  # opens the producer (its recovery probe passes)
    _rows(fresh_db, "t1", ["a", "b"])
    k.checkpoint_denied = True
    return r


@pytest.mark.parametrize("abort_fails", [False, True])
def test_a_refused_checkpoint_topic_charges_no_event_row(fresh_db: str, store: RelayStore,  # noqa: F811
                                                        abort_fails: bool) -> None:
    k = FakeKafka()
    if abort_fails:  # the refused transaction can only end by replacing the producer
        k.fail_abort.append(KafkaUnavailableError("abort failed (fake)"))
    r = _open_then_revoke_the_checkpoint(fresh_db, store, k)
    w = r.workers[0]
    with pytest.raises(KafkaUnavailableError, match=r"producer as a whole|cannot start its transactions"):
        w.run_once()
    for _ in range(3):
        with pytest.raises(PublishError):
            w.run_once()
    assert scalar(fresh_db, "SELECT max(attempts) FROM outbox.event") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.dead_letter") == 0
    k.checkpoint_denied = False  # WRITE granted again: everything flows, nothing was dead-lettered
    r.drain(fresh_db)
    assert pending(fresh_db) == 0
    published_once(k, fresh_db)


def test_an_event_topic_refused_as_a_whole_is_still_charged_after_the_producer_is_replaced(
        fresh_db: str, store: RelayStore) -> None:  # noqa: F811
    k = FakeKafka(denied_topics={"denied"}, fail_abort=[KafkaUnavailableError("abort failed (fake)")])
    r = Relay(store, settings(fresh_db, max_attempts=1), k)
    bad = _rows(fresh_db, "denied", ["a"])
    r.workers[0].run_once()
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.dead_letter WHERE event_pk = %s", bad[0]) == 1
