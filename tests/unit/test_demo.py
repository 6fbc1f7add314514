"""`make demo` (python -m demo): its output is its own lines, and the latency it reports is explained.

Nothing here starts the stack: the Kafka client is pointed at a closed port.
"""

from __future__ import annotations

import gc

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from demo.__main__ import kafka_admin, latency_note

CLOSED = "127.0.0.1:1"


def _use_and_free(admin: AdminClient) -> None:
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=1)  # librdkafka logs each refused connection meanwhile
    del admin
    gc.collect()  # frees the client: its threads have ended, and written what they would, when this returns


def test_the_demos_kafka_client_prints_no_raw_librdkafka_line(capfd: pytest.CaptureFixture[str]) -> None:
    _use_and_free(AdminClient({"bootstrap.servers": CLOSED}))
    assert "|rdkafka#producer-" in capfd.readouterr().err, "control: a client without a logger prints raw lines"

    _use_and_free(kafka_admin(CLOSED))
    captured = capfd.readouterr()
    assert "rdkafka#" not in captured.err + captured.out


def test_the_latency_note_says_where_the_seconds_come_from() -> None:
    note = latency_note(10_000, 9.04, 2.8, {"billing": 205.4, "shipping": 101.2})
    assert note.startswith("latency p50 / p99 (above) runs from each event's write to its group's commit.")
    assert "The 10,000 events came as one burst, written in 9.0s and all in Kafka 2.8s after the last write" in note
    assert "(billing ~205 events/s and shipping ~101 events/s here)" in note
    assert "That queue, not the relay, is the latency shown" in note
