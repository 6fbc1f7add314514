"""Write-time refusals of what Kafka would refuse after the commit (issue 18, findings 4 and 5): Kafka's internal
topics, records over the limit as Kafka counts them (every header's framing, the relay's own headers, the batch
overhead), and JSON objects whose keys collide once coerced. No database and no broker: the broker's side of the
size count is proven in tests/integration/write/test_kafka_limits.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

import outbox
from outbox import errors
from outbox.config import DEFAULT_MAX_RECORD_BYTES, Settings
from outbox.envelope import BATCH_OVERHEAD, WIDEST_BIGINT, header_bytes, kafka_headers, record_bytes, varint_bytes
from outbox.event import Event
from outbox.validation import encode_data, prepare, prepare_one, record_size

LIMIT = 4096
SMALL = Settings(source="urn:t", max_payload_bytes=LIMIT)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def ev(**kw: Any) -> Event:
    base: dict[str, Any] = {"topic": "orders", "type": "order.created", "data": b"", "source": "urn:t",
                            "content_type": "application/octet-stream", "id": uuid.UUID(int=7),
                            "time": datetime(2026, 12, 7, 1, 2, 3, 456789, tzinfo=UTC)}
    base.update(kw)
    return Event(**base)


# --- an independent encoder of a Kafka v2 record alone in its batch (KIP-98), to check the count against ---------

def _varint(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _framed(b: bytes | None) -> bytes:
    return _varint(-1) if b is None else _varint(len(b)) + b


def wire(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    body = b"\x00" + _varint(0) + _varint(0) + _framed(key) + _framed(value) + _varint(len(headers))
    body += b"".join(_framed(n.encode()) + _framed(v) for n, v in headers)
    return BATCH_OVERHEAD + len(_varint(len(body)) + body)


def as_sent(e: Event, payload: bytes, traceparent: str | None = None) -> int:
    """The record the relay would send for ``e`` (relay/records.py), its database-assigned ids at their widest."""
    user = [(n, v if isinstance(v, bytes) else v.encode()) for n, v in e.headers]  # type: ignore[misc]
    hs = kafka_headers(event_id=e.id, source=str(e.source), type=e.type, time=e.time,
                       content_type=str(e.content_type), outbox_id=WIDEST_BIGINT,
                       key_seq=None if e.key is None else WIDEST_BIGINT, subject=e.subject,
                       traceparent=traceparent, user_headers=user)
    return wire(e.key_bytes, payload, hs)


def test_varints_are_kafkas() -> None:
    for n in (-1, 0, 1, 63, 64, 8191, 8192, 1_048_576, 2**31 - 1, WIDEST_BIGINT):
        assert varint_bytes(n) == len(_varint(n)), n


@pytest.mark.parametrize("kw", [
    {},
    {"key": "customer-42", "subject": "sub", "headers": {"h": "v", "é": b"\x00\xff"}},
    {"headers": [(f"h{i}", "v") for i in range(300)]},
    {"key": b"", "headers": [("x" * 200, b"y" * 70)]},
])
def test_the_count_is_the_record_as_the_relay_sends_it(kw: dict[str, Any]) -> None:
    e = ev(**kw)
    for payload in (b"", b"x" * 63, b"x" * 64, b"x" * 3000):
        for tp in (None, TRACEPARENT):
            assert record_size(e, payload, e.key_bytes, tp) == as_sent(e, payload, tp)


def _largest_payload(e: Event, s: Settings, traceparent: str | None = None) -> int:
    n = s.max_payload_bytes - record_size(e, b"", e.key_bytes, traceparent)
    while record_size(e, b"x" * n, e.key_bytes, traceparent) > s.max_payload_bytes:
        n -= 1
    return n


@pytest.mark.parametrize("headers", [0, 1, 50, 400])
def test_an_event_at_the_limit_passes_and_one_byte_more_is_refused(headers: int) -> None:
    e = ev(key="k", headers=[(f"h{i}", "v") for i in range(headers)])
    n = _largest_payload(e, SMALL)
    assert as_sent(e, b"x" * n) == LIMIT  # exactly at the limit (no varint step in the way at these sizes)
    prepare_one(ev(key="k", headers=e.headers, data=b"x" * n), SMALL)
    with pytest.raises(errors.PayloadError, match=rf"record of {LIMIT + 1} bytes .* over the maximum of {LIMIT} "):
        prepare_one(ev(key="k", headers=e.headers, data=b"x" * (n + 1)), SMALL)


def test_many_small_headers_count_their_framing() -> None:
    # The finding: payload + names + values fitted, but each header's two varint lengths and the count did not.
    headers = [(f"h{i:03d}", "v") for i in range(400)]
    e = ev(headers=headers)
    n = _largest_payload(e, SMALL)
    raw = n + sum(len(h) + len(v) for h, v in headers)
    assert raw + 2 * 400 < LIMIT  # the framing the old count ignored is what fills the record
    with pytest.raises(errors.PayloadError, match="over the maximum"):
        prepare_one(ev(headers=headers, data=b"x" * (n + 1)), SMALL)


def test_the_traceparent_the_relay_will_send_counts() -> None:
    e = ev()
    n = _largest_payload(e, SMALL)
    prepare([ev(data=b"x" * n)], SMALL)
    with pytest.raises(errors.PayloadError, match="over the maximum"):
        prepare([ev(data=b"x" * n)], SMALL, TRACEPARENT)


def test_the_message_names_the_parts_and_the_settings() -> None:
    with pytest.raises(errors.PayloadError) as exc:
        prepare_one(ev(data=b"x" * LIMIT), SMALL)
    text = str(exc.value)
    assert f"payload {LIMIT}" in text and "envelope" in text and "OUTBOX_MAX_PAYLOAD_BYTES" in text, text
    assert "message.max.bytes" in text and "the largest part is payload" in text, text


def test_the_default_limit_is_the_producers_and_fits_the_brokers() -> None:
    assert Settings(source="urn:t").max_payload_bytes == DEFAULT_MAX_RECORD_BYTES == 1_048_576
    assert DEFAULT_MAX_RECORD_BYTES <= 1_048_588  # the broker's default message.max.bytes
    assert record_bytes(None, 0, []) == BATCH_OVERHEAD + 7  # the smallest record: 61 + 1 + 6 framing bytes


@pytest.mark.parametrize("topic", ["__consumer_offsets", "__transaction_state", "__share_group_state",
                                   "__cluster_metadata", "__anything"])
def test_kafkas_internal_topics_are_refused(topic: str) -> None:
    with pytest.raises(errors.TopicError, match=r"starts with '__'.*internal topics.*pick another name"):
        ev(topic=topic)
    with pytest.raises(errors.TopicError):
        outbox.Event(topic=topic, type="t", source="urn:t")


@pytest.mark.parametrize("topic", ["_orders", "orders__x", "a_", "x" * 249])
def test_names_kafka_creates_pass(topic: str) -> None:
    assert ev(topic=topic).topic == topic


@pytest.mark.parametrize(("data", "path", "text"), [
    ({1: "a", "1": "b"}, "$", "'1'"),
    ({"x": [{True: 1, "true": 2}]}, "$.x[0]", "'true'"),
    ({"a": {"b": [0, {None: 1, "null": 2}]}}, "$.a.b[1]", "'null'"),
    ({"f": {1.5: 1, "1.5": 2}}, "$.f", "'1.5'"),
    ([[{"k": {"-3": 0, -3: 1}}]], "$[0][0].k", "'-3'"),
])
def test_keys_that_collide_once_written_are_refused_naming_the_path(data: Any, path: str, text: str) -> None:
    with pytest.raises(errors.PayloadError, match="two keys") as exc:
        prepare_one(ev(data=data, content_type=None), SMALL)
    assert f"at {path} " in str(exc.value) and f"JSON key {text}" in str(exc.value), exc.value


@pytest.mark.parametrize("data", [{1: "a", 2: "b"}, {"1": "a", 2: "b"}, {True: 1, "1": 2}, {1: 1, 1.0001: 2},
                                  {"a": [{"b": 1}, {"b": 2}]}])
def test_keys_that_stay_distinct_pass(data: Any) -> None:
    encode_data(data)


def test_a_collision_deep_inside_is_found_with_its_path() -> None:
    d: Any = {1: "a", "1": "b"}
    for _ in range(300):
        d = {"n": [d]}
    with pytest.raises(errors.PayloadError, match="two keys") as exc:
        encode_data({"first": {"ok": 1}, "deep": d})
    assert "at $.deep" + ".n[0]" * 300 + " " in str(exc.value)


def test_a_headers_framing_is_counted_in_one_place() -> None:
    # record_bytes and the too-large message's "headers" part both use header_bytes: one rule, one owner.
    assert header_bytes(1, 1) == 4 and header_bytes(64, 0) == 2 + 64 + 1
    sizes = [(1, 1), (2, 3)]  # the record stays under 64 bytes: its own length varint keeps one byte
    assert record_bytes(None, 0, sizes) - record_bytes(None, 0, []) == sum(header_bytes(n, v) for n, v in sizes)
    with pytest.raises(errors.PayloadError, match=rf"headers {header_bytes(1, 5000)}\b"):
        prepare_one(ev(data=b"", content_type="application/octet-stream", headers=[("h", "v" * 5000)]), SMALL)
