"""What a handler receives: the envelope headers become a frozen ReceivedEvent; foreign records still dedupe."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from outbox.envelope import kafka_headers
from outbox.kafka_consumer import KafkaRecord
from outbox.received import ReceivedEvent, RetryPolicy


def record(headers: list[tuple[str, bytes]], offset: int = 7) -> KafkaRecord:
    return KafkaRecord(topic="orders", partition=2, offset=offset, key=b"o-1", value=b'{"n": 1}',
                       headers=tuple(headers), timestamp_ms=None)


def test_envelope_headers_become_attributes() -> None:
    eid, t = uuid.uuid4(), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    h = kafka_headers(event_id=eid, source="urn:s", type="order.created", time=t, content_type="application/json",
                      outbox_id=42, key_seq=3, subject="o-1")
    ev = ReceivedEvent.from_record(record(h))
    assert (ev.event_id, ev.outbox_id, ev.key_seq, ev.type, ev.source, ev.subject, ev.time) == \
        (eid, 42, 3, "order.created", "urn:s", "o-1", t)
    assert ev.json() == {"n": 1} and (ev.topic, ev.partition, ev.offset) == ("orders", 2, 7)
    with pytest.raises(AttributeError):
        ev.offset = 8  # type: ignore[misc]


def test_a_record_without_an_event_id_is_deduplicated_by_its_position() -> None:
    a, b = ReceivedEvent.from_record(record([])), ReceivedEvent.from_record(record([("ce_id", b"not-a-uuid")]))
    assert a.event_id == b.event_id != ReceivedEvent.from_record(record([], offset=8)).event_id
    assert a.outbox_id is None and a.key_seq is None and a.time is None


def test_retry_waits_grow_and_are_capped() -> None:
    from tenacity import RetryCallState

    p = RetryPolicy(attempts=5, initial_wait=0.1, max_wait=0.3)
    waits = []
    for n in (1, 2, 3, 4):
        st = RetryCallState(None, None, (), {})
        st.attempt_number = n
        waits.append(p.wait(st))
    assert 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2 and all(w <= 0.3 for w in waits)
    with pytest.raises(ValueError, match="invalid RetryPolicy"):
        RetryPolicy(attempts=0)
