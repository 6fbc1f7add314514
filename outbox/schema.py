"""The declared schema: every table kafka-outbox owns, as SQLAlchemy Core.

The Alembic migrations must reproduce exactly this (``tests/integration/test_migrations.py`` proves the
autogenerate diff is empty). Tables live in the schema ``outbox``; a different schema name is applied at run time
with SQLAlchemy's ``schema_translate_map`` (see :func:`translate_map`), so the declaration stays constant.

States are derived from nullable timestamps rather than a status column, because each transition happens once
and a timestamp is both the state and the audit fact:

* pending       ``published_at IS NULL AND dead_at IS NULL``
* published     ``published_at IS NOT NULL``
* dead-lettered ``dead_at IS NOT NULL`` (details in ``dead_letter``)
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from outbox.config import MAX_SHARDS
from outbox.event import TIME_MAX, TIME_MIN, TOPIC_RE

DEFAULT_SCHEMA = "outbox"

metadata = MetaData(
    schema=DEFAULT_SCHEMA,
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)


def translate_map(schema: str) -> dict[str | None, str] | None:
    """Execution option mapping the declared schema to ``schema`` (None when it is the default)."""
    return None if schema == DEFAULT_SCHEMA else {DEFAULT_SCHEMA: schema}


TS = DateTime(timezone=True)

event = Table(
    "event",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("event_id", UUID(as_uuid=True), nullable=False, unique=True),
    # routing
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("shard", SmallInteger, nullable=False),
    # payload and CloudEvents attributes (binary content mode: ce_* headers + content-type)
    Column("payload", LargeBinary, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("subject", Text, nullable=True),
    Column("time", TS, nullable=False),
    Column("headers", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("traceparent", Text, nullable=True),
    # ordering: gap-free per-(topic, key) sequence assigned under the key_sequence row lock
    Column("key_seq", BigInteger, nullable=True),
    Column("tx_id", Text, nullable=False, server_default=text("(pg_current_xact_id())::text")),
    # state
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Column("published_at", TS, nullable=True),
    Column("kafka_partition", Integer, nullable=True),
    Column("kafka_offset", BigInteger, nullable=True),
    Column("relay_epoch", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text, nullable=True),
    Column("dead_at", TS, nullable=True),
    CheckConstraint("(key IS NULL) = (key_seq IS NULL)", name="key_seq_iff_key"),
    # relay_0003: rows the relay could never publish are refused when written (live rows only: the relay must
    # still be able to dead-letter a bad row written before; added NOT VALID by the migration). The relay
    # dead-letters any that get through (relay/records.py, docs/decisions/012).
    CheckConstraint(f"dead_at IS NOT NULL OR (shard >= 0 AND shard < {MAX_SHARDS})", name="shard_in_range"),
    CheckConstraint(f"dead_at IS NOT NULL OR (\"time\" >= '{TIME_MIN.isoformat(sep=' ')}' "
                    f"AND \"time\" <= '{TIME_MAX.isoformat(sep=' ')}')", name="time_in_range"),
    CheckConstraint("dead_at IS NOT NULL OR (jsonb_typeof(headers) = 'array' AND NOT jsonb_path_exists(headers, "
                    "'$[*] ? (@.type() != \"object\" || !exists(@.name) || !(exists(@.value) || exists(@.base64)))'))",
                    name="headers_list"),
    CheckConstraint(f"dead_at IS NOT NULL OR (topic ~ '^{TOPIC_RE.pattern}$' AND topic NOT IN ('.', '..'))",
                    name="topic_name"),
    CheckConstraint("dead_at IS NOT NULL OR (type <> '' AND source <> '' AND content_type <> '')",
                    name="attributes_present"),
    # The claim reads only this index: it stays as small as the backlog whatever the table size.
    Index(
        "ix_event_pending",
        "shard",
        "id",
        postgresql_where=text("published_at IS NULL AND dead_at IS NULL"),
    ),
    Index("ix_event_topic_key_seq", "topic", "key", "key_seq"),
)

key_sequence = Table(
    "key_sequence",
    metadata,
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("topic", "key"),
)

dead_letter = Table(
    "dead_letter",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("event_pk", BigInteger, nullable=False, unique=True),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("key_seq", BigInteger, nullable=True),
    Column("reason", Text, nullable=False),
    Column("error_class", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("failed_at", TS, nullable=False, server_default=text("now()")),
    # resolution: NULL while open (the key is held); 'retried' or 'discarded' once an operator acts
    Column("resolved_at", TS, nullable=True),
    Column("resolution", Text, nullable=True),
    Column("resolved_by", Text, nullable=True),
    CheckConstraint("resolution IN ('retried', 'discarded')", name="resolution_known"),
    Index("ix_dead_letter_open", "topic", "key", postgresql_where=text("resolved_at IS NULL")),
)

relay_lease = Table(
    "relay_lease",
    metadata,
    Column("shard", SmallInteger, primary_key=True, autoincrement=False),
    Column("owner", Text, nullable=True),
    # Bumped on every change of owner: the DB-side fencing token (a stale owner's marks are refused).
    Column("epoch", BigInteger, nullable=False, server_default=text("0")),
    Column("expires_at", TS, nullable=True),
    Column("renewed_at", TS, nullable=True),
)

# One row. Bumped in the transaction that makes rows pending again below the relays' claim floors (DLQ retry or
# discard, which releases a held key; replay): a claim that sees a new value ignores its floor (relay/floor.py).
relay_requeue = Table(
    "relay_requeue",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False, server_default=text("1")),
    Column("gen", BigInteger, nullable=False, server_default=text("0")),
    CheckConstraint("id = 1", name="one_row"),
)

# One row: the outbox's id in Kafka (transactional ids, checkpoint records), recorded at the relays' first start
# with where the outbox lived then, so a pg_upgrade (a new system identifier) keeps it (relay/identity.py).
relay_identity = Table(
    "relay_identity",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False, server_default=text("1")),
    Column("outbox_id", Text, nullable=False),
    Column("system_identifier", Text, nullable=False),
    Column("database", Text, nullable=False),
    Column("schema", Text, nullable=False),
    Column("recorded_at", TS, nullable=False, server_default=text("now()")),
    CheckConstraint("id = 1", name="one_row"),
)

relay_instance = Table(
    "relay_instance",
    metadata,
    Column("instance_id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", TS, nullable=False, server_default=text("now()")),
    Column("heartbeat_at", TS, nullable=False, server_default=text("now()")),
    # outbox.__version__ of the relay (migration relay_0005); NULL from relays of earlier builds. `outbox status`
    # shows it, so an upgrade can wait until no relay of the old build is left (docs/operations.md).
    Column("version", Text, nullable=True),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("consumer_group", Text, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("key", LargeBinary, nullable=True),
    Column("key_seq", BigInteger, nullable=True),
    Column("event_time", TS, nullable=True),
    Column("received_at", TS, nullable=False, server_default=text("now()")),
    Column("processed_at", TS, nullable=True),
    # 'processed' or 'dead_lettered' (the handler kept failing; recorded, never lost)
    Column("outcome", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("error", Text, nullable=True),
    CheckConstraint("outcome IN ('processed', 'dead_lettered')", name="outcome_known"),
    UniqueConstraint("consumer_group", "event_id"),
    # audit_0002: the outbox row id from the ``outbox-id`` header, the reconciler's join key (id buckets)
    Column("outbox_id", BigInteger, nullable=True),
    Index("ix_inbox_group_outbox_id", "consumer_group", "outbox_id"),
    # Ack order per key, read presorted by the reconciler's order check (no 10M-row sort).
    Index("ix_inbox_group_key_order", "consumer_group", "topic", "key", "id",
          postgresql_include=["key_seq", "outbox_id"]),
)

# audit_0002: a copy of an already-acknowledged event that arrived again from ANOTHER Kafka position, i.e. the
# event was published more than once (a redelivery of the same position is the inbox working and is not stored).
inbox_redelivery = Table(
    "inbox_redelivery",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("consumer_group", Text, nullable=False),
    Column("event_id", UUID(as_uuid=True), nullable=False),
    Column("topic", Text, nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    Column("received_at", TS, nullable=False, server_default=text("now()")),
    UniqueConstraint("consumer_group", "event_id", "topic", "kafka_partition", "kafka_offset",
                     name="uq_inbox_redelivery_copy"),
)

subscription = Table(
    "subscription",
    metadata,
    Column("consumer_group", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("registered_at", TS, nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("consumer_group", "topic"),
)

reconcile_checkpoint = Table(
    "reconcile_checkpoint",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("consumer_group", Text, nullable=False),
    Column("id_lo", BigInteger, nullable=False),
    Column("id_hi", BigInteger, nullable=False),
    Column("expected", BigInteger, nullable=False),
    Column("acknowledged", BigInteger, nullable=False),
    Column("digest", Text, nullable=False),
    Column("report_sha256", Text, nullable=True),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
    Index("ix_reconcile_checkpoint_group_hi", "consumer_group", "id_hi"),
)

replay_audit = Table(
    "replay_audit",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("actor", Text, nullable=False),
    Column("selector", JSONB, nullable=False),
    Column("event_count", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False, server_default=text("now()")),
)
