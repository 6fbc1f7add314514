"""librdkafka errors map onto the tree once, at the seam (relay.kafka.translate)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError
from relay.kafka import translate


@pytest.mark.parametrize(("code", "cls"), [
    (KafkaError.MSG_SIZE_TOO_LARGE, PermanentPublishError),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, PermanentPublishError),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, PermanentPublishError),
    (KafkaError._UNKNOWN_TOPIC, PermanentPublishError),
    (KafkaError.PRODUCER_FENCED, FencedError),
    (KafkaError._FENCED, FencedError),
    (KafkaError._MSG_TIMED_OUT, KafkaUnavailableError),
    (KafkaError._TRANSPORT, KafkaUnavailableError),
    (KafkaError.NOT_ENOUGH_REPLICAS, KafkaUnavailableError),
])
def test_translation(code: int, cls: type) -> None:
    e = translate(KafkaError(code), "doing it")
    assert type(e) is cls and "doing it" in str(e)


def test_fatal_errors_are_treated_like_fencing() -> None:
    assert isinstance(translate(KafkaError(KafkaError._STATE, fatal=True), "x"), FencedError)
