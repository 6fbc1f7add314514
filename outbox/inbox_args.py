"""The checks on what an :class:`~outbox.inbox.Inbox` (and its Kafka consumer) is built with.

They run at construction, before anything connects, because a bad argument found later is worse than a crash:
a handler that cannot be called fails on *every* record, and the inbox would retry, dead-letter and commit past
all of them. Each failure is a :class:`~outbox.errors.ConfigError` naming the argument and what is accepted.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import sqlalchemy as sa

from outbox.config import MAX_IDENT, is_identifier
from outbox.errors import ConfigError, TopicError
from outbox.event import check_topic

MAX_GROUP_CHARS = 255
"""The consumer group is part of every inbox row and of its key-order index, whose entries Postgres caps at
about 2.7 kB: a long group name would leave little room for record keys."""
MAX_BATCH = 1_000_000
"""librdkafka's own limit on one ``consume()`` call."""
HANDLER_SIGNATURE = "handler(conn: sqlalchemy.Connection, event: outbox.inbox.ReceivedEvent) -> None"



def check_engine(engine: object) -> sa.Engine:
    if not isinstance(engine, sa.Engine):
        raise ConfigError(f"engine must be a sqlalchemy.Engine of the consumer's database "
                          f"(sqlalchemy.create_engine(url)), got {type(engine).__name__}")
    return engine


def check_group(group: object) -> str:
    if not isinstance(group, str) or not group.strip() or "\x00" in group or len(group) > MAX_GROUP_CHARS:
        raise ConfigError(f"group must be a non-empty Kafka consumer group name without NUL, at most "
                          f"{MAX_GROUP_CHARS} characters, e.g. 'billing'; got {group!r:.300}")
    return group


def check_topics(topics: object) -> list[str]:
    """The topic names, each checked as Kafka would; duplicates dropped, order kept."""
    # A str is iterable too: "orders" would silently subscribe to 'o', 'r', 'd', ... (and register them).
    if isinstance(topics, str | bytes | bytearray) or not isinstance(topics, Iterable):
        raise ConfigError(f"topics must be a collection of topic names, e.g. ['orders'], got {topics!r:.300}")
    names: list[str] = []
    for t in topics:
        try:
            names.append(check_topic(t))
        except TopicError as exc:
            raise ConfigError(f"topics: {exc}") from exc
    if not names:
        raise ConfigError("topics is empty: give the topics the group consumes, e.g. ['orders']")
    return list(dict.fromkeys(names))


def check_handler(handler: object) -> None:
    if not callable(handler):
        raise ConfigError(f"handler must be a callable {HANDLER_SIGNATURE}, got {type(handler).__name__} "
                          f"{handler!r:.80}")
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # no introspectable signature (some C callables): the first call will tell
    try:
        sig.bind(None, None)
    except TypeError as exc:
        name = getattr(handler, "__qualname__", type(handler).__name__)
        raise ConfigError(f"handler {name}{sig} cannot be called as {HANDLER_SIGNATURE}: {exc}") from exc


def check_schema(schema: object) -> str:
    # Formatted into the inbox's SQL (outbox.store.inbox), so it must be a plain identifier.
    if not is_identifier(schema):
        raise ConfigError(f"schema must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*, at most {MAX_IDENT} "
                          f"characters), got {schema!r:.300}")
    return schema


def check_max_batch(max_batch: object) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_BATCH:
        raise ConfigError(f"max_batch must be an integer from 1 to {MAX_BATCH} (records per poll), "
                          f"got {max_batch!r}")
    return max_batch


def check_ack_topic(ack_topic: str | None, bootstrap: str | None) -> str | None:
    if ack_topic is None:
        return None
    try:
        check_topic(ack_topic)
    except TopicError as exc:
        raise ConfigError(f"ack_topic: {exc}") from exc
    if not bootstrap:
        # With a custom consumer the inbox has no broker address of its own: the acks would silently never go.
        raise ConfigError(f"ack_topic={ack_topic!r} needs bootstrap= (the servers to publish acknowledgements to), "
                          "also when a custom consumer is given")
    return ack_topic
