"""librdkafka errors map onto the tree once, at the seam (relay.kafka.translate)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError
from relay.kafka import checkpoints, translate
from relay.kafka.clients import TOPIC_REFUSALS, topic_refusal


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


@pytest.mark.parametrize("code", [KafkaError._UNKNOWN_PARTITION,
                                  KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.POLICY_VIOLATION])
def test_other_record_level_refusals_are_permanent(code: int) -> None:
    assert type(translate(KafkaError(code), "x")) is PermanentPublishError


def test_an_invalid_timestamp_is_the_relay_hosts_clock_so_transient_and_said_so() -> None:
    # The relay never sets timestamps: the broker is refusing this host's clock, not a row.
    e = translate(KafkaError(KafkaError.INVALID_TIMESTAMP), "x")
    assert type(e) is KafkaUnavailableError and "clock skew" in str(e)


@pytest.mark.parametrize("code", [KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                                  KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, KafkaError.INVALID_TXN_STATE])
def test_errors_of_the_producer_as_a_whole_never_dead_letter_rows(code: int) -> None:
    # Not a record's fault: charging rows for them would dead-letter every row the relay sees.
    assert not isinstance(translate(KafkaError(code), "x"), PermanentPublishError)


@pytest.mark.parametrize(("code", "says"), [
    (KafkaError.UNKNOWN_TOPIC_OR_PART, "does not exist"),
    (KafkaError.TOPIC_EXCEPTION, "not a valid Kafka topic name"),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, "grant it DESCRIBE and WRITE"),
])
def test_topic_metadata_errors_that_refuse_every_record_name_the_fix(code: int, says: str) -> None:
    reason = topic_refusal("orders", KafkaError(code))
    assert reason is not None and says in reason and "'orders'" in reason and "dlq retry" in reason


@pytest.mark.parametrize("err", [None, KafkaError(KafkaError.LEADER_NOT_AVAILABLE), KafkaError(KafkaError._TRANSPORT)])
def test_a_usable_or_transiently_unavailable_topic_is_not_refused(err: KafkaError | None) -> None:
    assert topic_refusal("orders", err) is None


def test_one_table_of_topic_refusals_serves_the_checkpoint_topic_and_event_topics() -> None:
    assert not hasattr(checkpoints, "_TOPIC_REFUSALS"), "a second table would drift from the first"
    assert TOPIC_REFUSALS[KafkaError.INVALID_REPLICATION_FACTOR].created == "replication"
    assert TOPIC_REFUSALS[KafkaError.TOPIC_EXCEPTION].created == "name"
    # A cluster-wide refusal is a configuration fault at start, never a reason to refuse one event topic.
    assert TOPIC_REFUSALS[KafkaError.CLUSTER_AUTHORIZATION_FAILED].created == "denied"
    assert topic_refusal("orders", KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED)) is None
