"""The SQL of the consumer inbox: acknowledgements, copies from other positions, subscriptions.

Runs on the *consumer's* database (which may not be the producer's), always inside the transaction that also
runs the user's handler, so the acknowledgement and the handler's effects commit or roll back together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert

from outbox.errors import UnstorableRecordError
from outbox.schema import inbox, inbox_redelivery, subscription, translate_map
from outbox.store import translate_errors

MAX_ERROR_CHARS = 8000
_PROGRAM_LIMIT_EXCEEDED = "54000"  # SQLSTATE, e.g. "index row size ... exceeds btree version 4 maximum 2704"


def _opts(schema: str) -> dict[str, Any]:
    tm = translate_map(schema)
    return {"schema_translate_map": tm} if tm else {}


@dataclass(frozen=True)
class Ack:
    """One acknowledgement (inbox row) to insert."""

    consumer_group: str
    event_id: uuid.UUID
    outbox_id: int | None
    topic: str
    partition: int
    offset: int
    key: bytes | None
    key_seq: int | None
    event_time: Any
    outcome: str  # 'processed' | 'dead_lettered'
    attempts: int = 1
    error: str | None = None
    processed_at: Any = None  # set when loading acknowledgements read from an ack topic


# The per-record hot path runs as plain driver SQL (no statement building per record): it is most of the
# inbox's CPU time. The schema is a validated identifier (outbox.config), so it is safe to format in.
_ACK = ('INSERT INTO "{s}".inbox (consumer_group, event_id, outbox_id, topic, kafka_partition, kafka_offset, key, '
        "key_seq, event_time, outcome, attempts, error, processed_at) VALUES (%(g)s, %(e)s, %(o)s, %(t)s, %(p)s, "
        "%(off)s, %(k)s, %(seq)s, %(et)s, %(out)s, %(att)s, %(err)s, "
        "CASE WHEN %(dead)s THEN coalesce(%(pat)s::timestamptz, clock_timestamp()) ELSE %(pat)s::timestamptz END) "
        "ON CONFLICT (consumer_group, event_id) DO NOTHING RETURNING id")
_STAMP = 'UPDATE "{s}".inbox SET processed_at = clock_timestamp() WHERE id = %(id)s'


def acknowledge(conn: sa.Connection, ack: Ack, schema: str) -> int | None:
    """Insert the inbox row; its primary key, or None when (group, event id) is already acknowledged.

    A dead letter is final when written (stamped now); a processed row is stamped after its handler ran.
    """
    params = {
        "g": ack.consumer_group, "e": ack.event_id, "o": ack.outbox_id, "t": ack.topic, "p": ack.partition,
        "off": ack.offset, "k": ack.key, "seq": ack.key_seq, "et": ack.event_time, "out": ack.outcome,
        "att": ack.attempts, "err": ack.error[:MAX_ERROR_CHARS] if ack.error else None,
        "dead": ack.outcome == "dead_lettered", "pat": ack.processed_at,
    }
    with translate_errors("acknowledging an event in the inbox"):
        try:
            row = conn.exec_driver_sql(_ACK.format(s=schema), params).first()
        except sa_exc.DBAPIError as exc:
            # psycopg files 54000 under OperationalError, which would read as "database unavailable": it is not.
            if getattr(exc.orig, "sqlstate", None) == _PROGRAM_LIMIT_EXCEEDED:
                limit = (str(exc.orig).strip().splitlines() or ["program limit exceeded"])[0]
                raise UnstorableRecordError(
                    f"the inbox cannot store this record's {len(ack.key or b'')}-byte key ({limit})") from exc
            raise
    return None if row is None else int(row[0])


def mark_processed(conn: sa.Connection, inbox_pk: int, schema: str) -> None:
    """Stamp the handler's completion time on the inbox row (same transaction as the handler)."""
    with translate_errors("stamping the inbox row"):
        conn.exec_driver_sql(_STAMP.format(s=schema), {"id": inbox_pk})


def mark_ended_by_handler(conn: sa.Connection, inbox_pk: int, error: str, schema: str) -> bool:
    """Turn an inbox row the handler committed itself (never stamped) into a dead letter saying so.

    False when there is no such row: the handler's commit did not happen (it rolled back or closed instead).
    """
    stmt = (sa.update(inbox).where(inbox.c.id == inbox_pk, inbox.c.processed_at.is_(None))
            .values(outcome="dead_lettered", error=error[:MAX_ERROR_CHARS], processed_at=sa.func.clock_timestamp())
            .returning(inbox.c.id))
    with translate_errors("recording a handler that ended the inbox transaction"):
        return conn.execute(stmt, execution_options=_opts(schema)).first() is not None


def acknowledged_position(conn: sa.Connection, group: str, event_id: uuid.UUID,
                          schema: str) -> tuple[str, int, int] | None:
    """Where the acknowledged copy of ``event_id`` was read from: (topic, partition, offset)."""
    stmt = sa.select(inbox.c.topic, inbox.c.kafka_partition, inbox.c.kafka_offset).where(
        inbox.c.consumer_group == group, inbox.c.event_id == event_id)
    with translate_errors("reading an inbox row"):
        row = conn.execute(stmt, execution_options=_opts(schema)).first()
    return None if row is None else (row.topic, row.kafka_partition, row.kafka_offset)


def record_copy(conn: sa.Connection, group: str, event_id: uuid.UUID, position: tuple[str, int, int],
                schema: str) -> bool:
    """Record a copy of an acknowledged event read from another position; False if already recorded."""
    topic, partition, offset = position
    stmt = (pg_insert(inbox_redelivery)
            .values(consumer_group=group, event_id=event_id, topic=topic, kafka_partition=partition,
                    kafka_offset=offset)
            .on_conflict_do_nothing()
            .returning(inbox_redelivery.c.id))
    with translate_errors("recording a duplicate copy"):
        return conn.execute(stmt, execution_options=_opts(schema)).scalar_one_or_none() is not None


def register_subscription(conn: sa.Connection, group: str, topics: Sequence[str], schema: str) -> None:
    """Record that ``group`` consumes ``topics``: the reconciler expects every published event on them."""
    if not topics:
        return
    stmt = (pg_insert(subscription).values([{"consumer_group": group, "topic": t} for t in topics])
            .on_conflict_do_nothing())
    with translate_errors("registering the consumer group's subscription"):
        conn.execute(stmt, execution_options=_opts(schema))
