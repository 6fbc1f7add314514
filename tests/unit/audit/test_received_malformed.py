"""Header values the database cannot hold become None, like any other malformed header: storing them would fail
the record's transaction on every redelivery (a wedged group) or store a time no reader can load back."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from tenacity import RetryCallState

from outbox.errors import ConfigError
from outbox.kafka_consumer import KafkaRecord
from outbox.received import ReceivedEvent, RetryPolicy


def received(*headers: tuple[str, bytes]) -> ReceivedEvent:
    h = (("outbox-event-id", str(uuid.uuid4()).encode()), *headers)
    return ReceivedEvent.from_record(KafkaRecord(topic="orders", partition=0, offset=1, key=b"k", value=b"{}",
                                                 headers=h, timestamp_ms=None))


@pytest.mark.parametrize("header", ["outbox-key-seq", "outbox-id"])
@pytest.mark.parametrize("value", [b"99999999999999999999", str(2**63).encode(), str(-(2**63) - 1).encode(),
                                   b"9" * 5000])
def test_integers_beyond_bigint_are_malformed(header: str, value: bytes) -> None:
    ev = received((header, value))
    assert (ev.key_seq if header == "outbox-key-seq" else ev.outbox_id) is None


@pytest.mark.parametrize("value", [2**63 - 1, -(2**63), 0, 42])
def test_integers_within_bigint_are_kept(value: int) -> None:
    ev = received(("outbox-key-seq", str(value).encode()), ("outbox-id", str(value).encode()))
    assert ev.key_seq == value and ev.outbox_id == value


@pytest.mark.parametrize("value", [b"9999-12-31T23:00:00-12:00", b"9999-12-31T23:59:59+00:00",
                                   b"0001-01-01T00:00:00+14:00", b"0001-01-01T00:00:00+00:00"])
def test_times_at_the_edge_of_what_python_can_read_back_are_malformed(value: bytes) -> None:
    assert received(("ce_time", value)).time is None


def test_ordinary_times_are_kept() -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert received(("ce_time", t.isoformat().encode())).time == t
    assert received(("ce_time", b"9999-12-29T00:00:00Z")).time == datetime(9999, 12, 29, tzinfo=UTC)


@pytest.mark.parametrize(("kw", "message"), [
    ({"attempts": 2.5}, "attempts must be an integer >= 1"),
    ({"attempts": "3"}, "attempts must be an integer >= 1"),
    ({"attempts": True}, "attempts must be an integer >= 1"),
    ({"attempts": 0}, "attempts must be an integer >= 1"),
    ({"initial_wait": -1}, "initial_wait must be a finite number of seconds"),
    ({"initial_wait": "0.1"}, "initial_wait must be a finite number of seconds"),
    ({"max_wait": math.inf}, "max_wait must be a finite number of seconds"),
    ({"initial_wait": math.nan}, "initial_wait must be a finite number of seconds"),
    ({"initial_wait": 3.0, "max_wait": 1.0}, r"max_wait \(1.0\) must be >= initial_wait \(3.0\)"),
])
def test_a_bad_retry_policy_is_a_config_error(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid RetryPolicy: {message}"):
        RetryPolicy(**kw)  # type: ignore[arg-type]


def test_many_attempts_do_not_overflow_the_wait() -> None:
    st = RetryCallState(None, None, (), {})
    st.attempt_number = 5000
    assert 1.0 <= RetryPolicy(attempts=10_000, initial_wait=0.1, max_wait=2.0).wait(st) <= 2.0
