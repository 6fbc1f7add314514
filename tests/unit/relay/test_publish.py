"""One batch, one transaction (relay.publish) against the fake seam: attribution of refusals, order kept."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError
from outbox.store.relay import PendingRow
from relay import checkpoint
from relay.identity import OutboxIdentity
from relay.publish import TopicGate, choose, isolate, publish_batch
from relay.records import to_record
from tests.unit.relay.fakes import FakeKafka, FakeTransport, row

WRITER = checkpoint.Writer(OutboxIdentity("7", "db", "outbox"), "p-3", "me")


def _publish(k: FakeKafka, rows: list, t: FakeTransport | None = None):  # type: ignore[no-untyped-def]
    t = t or FakeTransport(k)
    if t.my_epoch < 0:
        t.init()
    return publish_batch(t, rows, shard=3, epoch=7, writer=WRITER, checkpoint_partition=3)


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


# --- permanent errors and hostile rows (docs/decisions/012) ---------------------------------------------------
def _hostile(i: int, row_key: str | None = "a", **changes: Any) -> PendingRow:
    return dataclasses.replace(row(i, row_key), **changes)


@pytest.mark.parametrize(("changes", "says"), [
    ({"headers": '{"name": "h", "value": "v"}'}, "not a list"),
    ({"headers": '"just a string"'}, "not a list"),
    ({"headers": "[1, 2]"}, "headers[0] is 1"),
    ({"headers": '[{"name": "h"}]'}, "exactly one of 'value'"),
    ({"headers": '[{"value": "v"}]'}, "no text 'name'"),
    ({"headers": '[{"name": "h", "value": 7}]'}, "int value"),
    ({"headers": '[{"name": "h", "base64": "%%%"}]'}, "not valid base64"),
    ({"headers": '[{"name": "h", "value": "v", "base64": "AA=="}]'}, "exactly one of"),
    ({"headers": '[{"name": "ce_id", "value": "forged"}]'}, "reserved header name"),
    ({"headers": "[" * 100_000 + "]" * 100_000}, "RecursionError"),
    ({"headers": "not json"}, "JSONDecodeError"),
    ({"time": None}, "time is infinite or outside 0001-01-02"),
    ({"topic": "a" * 250}, "at most 249"),
    ({"topic": "bad name"}, "characters Kafka rejects"),
    ({"topic": ""}, "topic is empty"),
    ({"payload": None}, "payload is NoneType"),
    ({"payload": "text"}, "payload is str"),
    ({"key": "text"}, "key is str"),
    ({"key_seq": None}, "key and key_seq"),
    ({"content_type": ""}, "content_type is ''"),
    ({"type": None}, "type is None"),
    ({"source": 5}, "source is 5"),
    ({"subject": b"x"}, "subject is bytes"),
])
def test_a_row_no_record_can_be_built_from_is_refused_with_the_reason(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(PermanentPublishError, match=r"row 1 cannot be published") as got:
        to_record(_hostile(1, **changes))
    assert says in str(got.value)


def test_valid_stored_headers_decode_in_order_text_and_bytes() -> None:
    r = _hostile(1, headers='[{"name": "a", "value": "x"}, {"name": "b", "base64": "AAE="}]')
    assert to_record(r).headers[-2:] == [("a", b"x"), ("b", b"\x00\x01")]


def test_undecodable_row_is_reported_apart_its_key_left_out_and_the_rest_commits() -> None:
    k = FakeKafka()
    out = _publish(k, [row(1, "a"), _hostile(2, "b", headers="[1]"), row(3, "b"), row(4, "c"),
                       _hostile(5, None, time=None)])
    assert set(out.undecodable) == {2, 5} and "headers[0]" in out.undecodable[2]
    assert not out.refused and not out.suspects
    assert k.published() == [1, 4], "row 3 (key b) must not overtake undecodable row 2"


def test_a_batch_of_only_undecodable_rows_opens_and_aborts_an_empty_transaction() -> None:
    k = FakeKafka()
    out = _publish(k, [_hostile(1, headers='{"x": 1}')])
    assert set(out.undecodable) == {1} and k.committed == [] and not out.marks


def test_transaction_refused_as_a_whole_with_one_topic_refuses_the_first_row_of_each_key() -> None:
    k = FakeKafka(denied_topics={"__consumer_offsets"})
    rows = [row(i, key, topic="__consumer_offsets") for i, key in ((1, "a"), (2, "b"), (3, "a"), (4, None))]
    out = _publish(k, rows)
    assert set(out.refused) == {1, 2, 4} and "TOPIC_AUTHORIZATION_FAILED" in out.refused[1]
    assert not out.suspect_topics and k.committed == []


def test_a_whole_transaction_refusal_is_charged_only_once_the_checkpoint_partition_alone_proves_writable() -> None:
    k = FakeKafka(denied_topics={"denied"})
    out = _publish(k, [row(1, "a", topic="denied")])
    assert set(out.refused) == {1} and k.probes == 1, "the checkpoint partition alone was proven writable first"


def test_a_refusal_of_the_checkpoint_topic_charges_no_row_and_is_transient() -> None:
    # WRITE revoked on the checkpoint topic: every transaction is refused as a whole, whatever its event topics.
    k = FakeKafka(checkpoint_denied=True)
    with pytest.raises(KafkaUnavailableError, match="producer as a whole"):
        _publish(k, [row(1, "a"), row(2, "b")])
    with pytest.raises(KafkaUnavailableError, match="producer as a whole"):
        _publish(k, [row(1, "a", topic="x"), row(2, "b", topic="y")])
    assert k.committed == []


def test_transaction_refused_as_a_whole_with_several_topics_makes_them_suspect_topics() -> None:
    k = FakeKafka(denied_topics={"denied"})
    out = _publish(k, [row(1, "a", topic="denied"), row(2, "b", topic="ok")])
    assert set(out.suspect_topics) == {"denied", "ok"} and not out.refused and k.committed == []


def test_choose_alternates_between_the_suspects_alone_and_everything_else() -> None:
    rows = [row(1, "a", topic="x"), row(2, "b"), row(3, "a", topic="x"), row(4, "c"), row(5, None)]
    assert choose(rows, {}, {}, isolating=True) is rows
    # A suspect topic: its rows alone on isolating turns, the others on the other turns.
    assert [r.id for r in choose(rows, {}, {"x": "why"}, isolating=True)] == [1, 3]
    assert [r.id for r in choose(rows, {}, {"x": "why"}, isolating=False)] == [2, 4, 5]
    # A suspect row (key b): alone; the others flow without it and without the later rows of its key.
    more = [*rows, row(6, "b")]
    assert [r.id for r in choose(more, {2: "why"}, {}, isolating=True)] == [2]
    assert [r.id for r in choose(more, {2: "why"}, {}, isolating=False)] == [1, 3, 4, 5]
    # Nothing else to publish: the isolating rows go whatever the turn.
    assert [r.id for r in choose([row(2, "b")], {2: "why"}, {}, isolating=False)] == [2]


def test_topic_gate_counts_one_attempt_per_check_and_picks_up_a_topic_created_later() -> None:
    k = FakeKafka(missing_topics={"gone"})
    t = FakeTransport(k)
    now = [0.0]
    gate = TopicGate(4.0, 0.125, clock=lambda: now[0])  # binary fractions: exact sums
    said = "topic 'gone' does not exist (fake)"
    assert gate.screen(t, ["gone", "ok"]) == {"gone": (said, False)}, "a first sighting counts nothing"
    checks = [0.0]
    while now[0] < 30:  # re-checked at 0.125 s, then doubling up to recheck_s; counted once refused for 4 s
        now[0] += 0.125
        before = k.metadata_requests
        got = gate.screen(t, ["gone"])
        assert got["gone"][0] == said
        if k.metadata_requests > before:
            checks.append(now[0])
            assert got["gone"][1] is (now[0] >= 4.0)
        else:
            assert got["gone"][1] is False, "not due: waits without counting"
    assert checks[:7] == [0.0, 0.125, 0.375, 0.875, 1.875, 3.875, 7.875] and checks[-1] - checks[-2] == 4.0
    k.missing_topics.clear()  # the operator created it
    now[0] += 4.0
    assert gate.screen(t, ["gone"]) == {}


def test_topic_gate_a_topic_created_on_use_costs_no_attempt_and_flows_at_the_quick_recheck() -> None:
    # auto.create.topics.enable=true: the first metadata request creates the topic and still answers
    # UNKNOWN_TOPIC_OR_PART; the next one finds it.
    k = FakeKafka(missing_topics={"new"})
    t = FakeTransport(k)
    now = [0.0]
    gate = TopicGate(5.0, 0.1, clock=lambda: now[0])
    assert gate.screen(t, ["new"]) == {"new": ("topic 'new' does not exist (fake)", False)}
    k.missing_topics.clear()
    now[0] = 0.1
    assert gate.screen(t, ["new"]) == {}, "re-checked at first_recheck_s, not recheck_s: its rows flow"
