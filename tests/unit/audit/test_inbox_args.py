"""An Inbox (and its Kafka consumer) refuses bad arguments at construction, with a typed error naming them.

Each of these used to be accepted: a handler that cannot be called dead-lettered every record, a str of topics
subscribed to its characters, an unchecked schema was formatted into SQL, an ack topic with a custom consumer
was silently never published to.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import sqlalchemy as sa

from outbox.errors import ConfigError, ConsumerError
from outbox.inbox import Inbox, ReceivedEvent, session_handler
from outbox.kafka_consumer import KafkaConsumer, KafkaRecord, Position


class NoRecords:
    """A ConsumerPort that is never polled here."""

    def poll_batch(self, max_records: int, timeout: float) -> list[KafkaRecord]:
        return []

    def commit(self, next_offsets: Mapping[Position, int]) -> None: ...
    def rewind(self, next_offsets: Mapping[Position, int]) -> None: ...
    def close(self) -> None: ...


def ok(conn: sa.Connection, ev: ReceivedEvent) -> None: ...


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/never")  # never connected to here
    yield eng
    eng.dispose()


def build(engine: Any, **kw: Any) -> Inbox:
    a: dict[str, Any] = {"group": "billing", "topics": ["orders"], "handler": ok, "consumer": NoRecords()}
    a.update(kw)
    return Inbox(engine, a.pop("group"), a.pop("topics"), a.pop("handler"), **a)


@pytest.mark.parametrize("handler", [None, "billing.handle", 42])
def test_a_handler_that_is_not_callable_is_refused(engine: sa.Engine, handler: object) -> None:
    with pytest.raises(ConfigError, match=r"handler must be a callable handler\(conn: sqlalchemy.Connection"):
        build(engine, handler=handler)


def one_arg(ev: ReceivedEvent) -> None: ...
def three_args(conn: sa.Connection, ev: ReceivedEvent, extra: int) -> None: ...
def keyword_only(conn: sa.Connection, ev: ReceivedEvent, *, extra: int) -> None: ...


@pytest.mark.parametrize("handler", [one_arg, three_args, keyword_only, lambda: None])
def test_a_handler_with_the_wrong_signature_is_refused(engine: sa.Engine, handler: object) -> None:
    with pytest.raises(ConfigError, match=r"cannot be called as handler\(conn: sqlalchemy.Connection, event: "):
        build(engine, handler=handler)


class CallableObject:
    def __call__(self, conn: sa.Connection, ev: ReceivedEvent) -> None: ...

    def method(self, conn: sa.Connection, ev: ReceivedEvent) -> None: ...


def with_defaults(conn: sa.Connection, ev: ReceivedEvent, extra: int = 0) -> None: ...
def variadic(*args: object) -> None: ...


@pytest.mark.parametrize("handler", [
    ok, lambda c, e: None, with_defaults, variadic, CallableObject(), CallableObject().method,
    functools.partial(three_args, extra=1), session_handler(lambda s, e: None), print,
])
def test_handlers_that_take_conn_and_event_are_accepted(engine: sa.Engine, handler: Any) -> None:
    assert build(engine, handler=handler).handler is handler


@pytest.mark.parametrize("topics", ["orders", b"orders", [], (), None, 7])
def test_topics_must_be_a_non_empty_collection_of_names(engine: sa.Engine, topics: object) -> None:
    with pytest.raises(ConfigError, match="topics"):
        build(engine, topics=topics)


@pytest.mark.parametrize("topics", [["or ders"], ["orders", ""], [b"orders"], ["x" * 250], [".."]])
def test_each_topic_is_checked_as_kafka_would(engine: sa.Engine, topics: object) -> None:
    with pytest.raises(ConfigError, match="topics: topic"):
        build(engine, topics=topics)


def test_topics_are_deduplicated_in_order(engine: sa.Engine) -> None:
    assert build(engine, topics=("payments", "orders", "payments")).topics == ["payments", "orders"]


def test_the_kafka_consumer_refuses_a_str_of_topics_before_subscribing() -> None:
    with pytest.raises(ConfigError, match="topics must be a collection"):
        KafkaConsumer("127.0.0.1:1", "billing", "orders")
    with pytest.raises(ConfigError, match="group"):
        KafkaConsumer("127.0.0.1:1", "", ["orders"])


@pytest.mark.parametrize("group", ["", "   ", None, "a\x00b", "g" * 256, 5])
def test_group_must_be_a_plausible_group_name(engine: sa.Engine, group: object) -> None:
    with pytest.raises(ConfigError, match="group must be"):
        build(engine, group=group)


@pytest.mark.parametrize("bad", [None, "postgresql://x/y", object()])
def test_engine_must_be_an_engine(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"engine must be a sqlalchemy\.Engine"):
        build(bad)


@pytest.mark.parametrize("schema", ['outbox".inbox; --', "", "1abc", "a" * 64, 5])
def test_schema_must_be_a_plain_identifier(engine: sa.Engine, schema: object) -> None:
    with pytest.raises(ConfigError, match="schema must be a plain SQL identifier"):
        build(engine, schema=schema)


def test_schema_defaults_to_the_configured_one(engine: sa.Engine) -> None:
    assert build(engine).schema == "outbox" and build(engine, schema="billing_inbox").schema == "billing_inbox"


@pytest.mark.parametrize("max_batch", [0, -1, True, 2.5, "10", 1_000_001])
def test_max_batch_must_be_a_positive_count(engine: sa.Engine, max_batch: object) -> None:
    with pytest.raises(ConfigError, match="max_batch must be an integer from 1"):
        build(engine, max_batch=max_batch)


def test_an_ack_topic_with_a_custom_consumer_needs_bootstrap(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="ack_topic='acks' needs bootstrap="):
        build(engine, ack_topic="acks")
    with pytest.raises(ConfigError, match="ack_topic: topic"):
        build(engine, ack_topic="no acks", bootstrap="127.0.0.1:1")


def test_retry_must_be_a_retry_policy(engine: sa.Engine) -> None:
    with pytest.raises(ConfigError, match="retry must be a RetryPolicy"):
        build(engine, retry=3)


def test_without_bootstrap_or_consumer_it_still_says_so(engine: sa.Engine) -> None:
    with pytest.raises(ConsumerError, match="needs bootstrap"):
        build(engine, consumer=None)
