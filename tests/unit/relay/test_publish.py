"""One batch, one transaction (relay.publish) against the fake seam: attribution of refusals, order kept."""

from __future__ import annotations

import pytest

from outbox.errors import FencedError, KafkaUnavailableError
from relay import checkpoint
from relay.faults import Faults
from relay.identity import OutboxIdentity
from relay.publish import isolate, publish_batch
from tests.unit.relay.fakes import FakeKafka, FakeTransport, row

WRITER = checkpoint.Writer(OutboxIdentity("7", "db", "outbox"), "p-3", "me")


def _publish(k: FakeKafka, rows: list, t: FakeTransport | None = None):  # type: ignore[no-untyped-def]
    t = t or FakeTransport(k)
    if t.my_epoch < 0:
        t.init()
    return publish_batch(t, rows, shard=3, epoch=7, writer=WRITER, checkpoint_partition=3, faults=Faults())


def test_whole_batch_commits_with_a_checkpoint_of_every_row_and_offset() -> None:
    k = FakeKafka()
    out = _publish(k, [row(1, "a"), row(2, "b"), row(3, "a")])
    assert [m.id for m in out.marks] == [1, 2, 3] and not out.refused and not out.suspects
    assert k.published() == [1, 2, 3]
    cp = checkpoint.decode(k.checkpoints[b"p-3"][-1])
    assert b"p-3.open" in k.checkpoints, "the checkpoint partition joins the transaction up front"
    assert (cp.shard, cp.epoch, cp.owner, cp.outbox) == (3, 7, "me", WRITER.outbox.id)
    assert [(m.id, m.partition, m.offset) for m in cp.marks] == [(1, 0, 0), (2, 0, 1), (3, 0, 2)]


def test_records_carry_the_envelope_headers() -> None:
    k = FakeKafka()
    r = row(5, "a", seq=42)
    _publish(k, [r])
    headers = dict(k.committed[0][0].headers)
    assert headers["outbox-key-seq"] == b"42" and headers["outbox-id"] == b"5"
    assert headers["outbox-event-id"] == str(r.event_id).encode() == headers["ce_id"]
    assert headers["h"] == b"v" and k.committed[0][0].key == b"a"


def test_client_refusal_holds_only_that_key_and_keeps_its_later_rows_out() -> None:
    k = FakeKafka(sync_refuse={2})
    out = _publish(k, [row(1, "a"), row(2, "b"), row(3, "a"), row(4, "b"), row(5, None)])
    assert set(out.refused) == {2}
    assert k.published() == [1, 3, 5], "row 4 (key b, after refused row 2) must not overtake it"


def test_broker_refusal_aborts_and_makes_the_batch_mates_suspects() -> None:
    k = FakeKafka(broker_refuse={2})
    out = _publish(k, [row(1, "a"), row(2, "b"), row(3, "c", topic="other")])
    assert not out.marks and k.committed == []
    assert set(out.suspects) == {1, 2}, "row 3 was in another record batch and is not a suspect"


def test_isolation_picks_the_first_row_of_the_earliest_suspects_key() -> None:
    rows = [row(1, "a"), row(2, "b"), row(3, "a"), row(4, None)]
    assert [r.id for r in isolate(rows, {3})] == [1]
    assert [r.id for r in isolate(rows, {2, 3})] == [2]
    assert [r.id for r in isolate(rows, {4})] == [4]
    assert [r.id for r in isolate(rows, {99})] == [1, 2, 3, 4]


def test_transient_and_fencing_errors_propagate() -> None:
    k = FakeKafka(fail_commit=[KafkaUnavailableError("timeout")])
    with pytest.raises(KafkaUnavailableError):
        _publish(k, [row(1)])
    k2 = FakeKafka()
    t = FakeTransport(k2)
    t.init()
    FakeTransport(k2).init()  # a newer producer with the same transactional.id
    with pytest.raises(FencedError):
        _publish(k2, [row(1)], t)
