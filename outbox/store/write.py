"""The SQL of ``enqueue``: per-key sequences, then the event rows, in the caller's transaction.

Order (docs/decisions/001-per-key-commit-order.md): for each distinct ``(topic, key)`` of the call, one upsert
on ``key_sequence`` reserves ``n`` numbers and takes that row's lock, held until the caller commits or rolls back.
A second writer of the same key waits on the lock, so:

* sequence order equals commit order (the next writer only reads ``last_seq`` after this one committed);
* there are no gaps (a rollback undoes the increment);
* for one key, row id order equals sequence order (ids are drawn after the lock is taken), so a relay that claims
  pending rows by id within a shard publishes each key in commit order.

Keys are locked in sorted order inside one statement, so two calls with overlapping keys cannot deadlock each
other. (Separate ``enqueue`` calls in one transaction lock in call order; keep that consistent across writers.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import Any

import psycopg
import sqlalchemy as sa

from outbox.errors import AttributeValueError
from outbox.event import StoredEvent
from outbox.schema import event, translate_map
from outbox.store import translate_errors
from outbox.validation import Prepared

KeyCounts = dict[tuple[str, bytes], int]
Sequencer = Callable[[sa.Connection, KeyCounts, dict[str, Any]], dict[tuple[str, bytes], int]]

# One constant statement for any batch (arrays in, so psycopg prepares it once per connection): one round trip.
# RETURNING reads only ``id, event_id`` of the event table: the least-privilege app role may read nothing else.
# * ``seq`` takes each key's row lock in sorted order (GROUP BY ... ORDER BY) and reserves ``n`` numbers;
# * the outer INSERT can only emit a row after the join found its key's sequence row, and ORDER BY ord sorts
#   after all locks are held, so every event id is drawn under its key's lock, in call order;
# * ``xid`` gives the transaction its id before any event id is drawn (a keyless event takes no sequence lock,
#   and the caller may not have written yet): the relay's claim floor relies on it (docs/decisions/015).
_ENQUEUE = """
WITH input AS (
    SELECT * FROM unnest(
        %(event_id)s::uuid[], %(topic)s::text[], %(key)s::bytea[], %(shard)s::int2[], %(payload)s::bytea[],
        %(content_type)s::text[], %(type)s::text[], %(source)s::text[], %(subject)s::text[],
        %(time)s::timestamptz[], %(headers)s::text[], %(n)s::int8[], %(nth)s::int8[]
    ) WITH ORDINALITY AS i(event_id, topic, key, shard, payload, content_type, type, source, subject, time,
                           headers, n, nth, ord)
), seq AS (
    INSERT INTO {schema}.key_sequence AS ks (topic, key, last_seq)
    SELECT topic, key, max(n) FROM input WHERE key IS NOT NULL GROUP BY topic, key ORDER BY topic, key
    ON CONFLICT (topic, key) DO UPDATE SET last_seq = ks.last_seq + excluded.last_seq
    RETURNING topic, key, last_seq
), xid AS MATERIALIZED (
    SELECT pg_current_xact_id() AS xid
), ins AS (
    INSERT INTO {schema}.event (event_id, topic, key, shard, payload, content_type, type, source, subject, time,
                                headers, traceparent, key_seq)
    SELECT i.event_id, i.topic, i.key, i.shard, i.payload, i.content_type, i.type, i.source, i.subject, i.time,
           i.headers::jsonb, %(traceparent)s, s.last_seq - i.n + i.nth
    FROM input i CROSS JOIN xid LEFT JOIN seq s ON s.topic = i.topic AND s.key = i.key
    ORDER BY i.ord
    RETURNING id, event_id
)
SELECT ins.id, s.last_seq - i.n + i.nth
FROM ins JOIN input i ON i.event_id = ins.event_id LEFT JOIN seq s ON s.topic = i.topic AND s.key = i.key
ORDER BY i.ord
"""


# The same for exactly one event, with scalar parameters: psycopg dumps scalars ~6x faster than one-element
# arrays, and one event per transaction is the hot path. The row is emitted only after the join has read ``seq``
# (the lock), so the id is still drawn under the key's lock.
_ENQUEUE_ONE = """
WITH seq AS (
    INSERT INTO {schema}.key_sequence AS ks (topic, key, last_seq)
    SELECT %(topic)s::text, %(key)s::bytea, 1 WHERE %(key)s::bytea IS NOT NULL
    ON CONFLICT (topic, key) DO UPDATE SET last_seq = ks.last_seq + 1
    RETURNING last_seq
), xid AS MATERIALIZED (
    SELECT pg_current_xact_id() AS xid
), ins AS (
    INSERT INTO {schema}.event (event_id, topic, key, shard, payload, content_type, type, source, subject, time,
                                headers, traceparent, key_seq)
    SELECT %(event_id)s::uuid, %(topic)s::text, %(key)s::bytea, %(shard)s::int2, %(payload)s::bytea,
           %(content_type)s::text, %(type)s::text, %(source)s::text, %(subject)s::text, %(time)s::timestamptz,
           %(headers)s::jsonb, %(traceparent)s::text, s.last_seq
    FROM (VALUES (1)) AS one(x) CROSS JOIN xid LEFT JOIN seq s ON true
    RETURNING id
)
SELECT ins.id, s.last_seq FROM ins LEFT JOIN seq s ON true
"""


@lru_cache(maxsize=32)
def _sql(schema: str, single: bool) -> str:
    # schema is a validated identifier (outbox.config), so quoting it is enough
    return (_ENQUEUE_ONE if single else _ENQUEUE).format(schema=f'"{schema}"')


_CURSOR = "outbox.enqueue.cursor"
_UNIQUE_VIOLATION = "23505"  # SQLSTATE
_EVENT_ID_UNIQUE = "uq_event_event_id"
_DUPLICATE_KEY = re.compile(r"\(event_id\)=\(([^)]*)\)")


@contextmanager
def _translated() -> Iterator[None]:
    """:func:`translate_errors`, except that a re-used event id is the caller's mistake, not the database's."""
    with translate_errors("enqueueing events"):
        try:
            yield
        except sa.exc.IntegrityError as exc:
            diag = getattr(exc.orig, "diag", None)
            if (getattr(exc.orig, "sqlstate", None) != _UNIQUE_VIOLATION
                    or getattr(diag, "constraint_name", None) != _EVENT_ID_UNIQUE):
                raise
            m = _DUPLICATE_KEY.search(getattr(diag, "message_detail", None) or "")
            which = f"event id {m.group(1)}" if m else "an event id of this call"
            # A failed statement aborts the whole Postgres transaction: say so, or the caller's next statement
            # fails with "current transaction is aborted" and no hint why.
            raise AttributeValueError(
                f"{which} is already in the outbox (enqueued earlier in this transaction, or committed "
                "before): event ids must be unique, so build a new Event (a fresh id) for each event; the "
                "database has aborted the transaction, so roll it back"
            ) from exc


def _observed(conn: sa.Connection) -> bool:
    """Whether anything watches SQLAlchemy's statement execution on ``conn`` (event listeners, echo logging)."""
    return bool(conn._has_events or conn.engine._has_events or conn.dialect._has_events or conn._echo)


def _execute(conn: sa.Connection, sql: str, params: dict[str, Any]) -> Sequence[tuple[Any, ...]]:
    """Run the enqueue statement in ``conn``'s transaction and return its rows.

    With the sync psycopg driver and nothing observing SQLAlchemy's execution, the statement goes straight to a
    psycopg cursor kept with the DBAPI connection (``info`` is cleared when that connection is replaced): ~55 µs
    of client CPU less per call than ``exec_driver_sql`` (execution context, result object, a new cursor), on a
    path taken once per business transaction (docs/decisions/003). SQLAlchemy's error handling is kept: a driver
    error is wrapped as SQLAlchemy wraps it, a lost or interrupted connection invalidates ``conn``. Anything else
    (listeners such as OpenTelemetry's, ``echo``, async drivers) takes ``exec_driver_sql``, so it sees the
    statement as before.
    """
    fairy = conn.connection
    dbapi_conn = fairy.dbapi_connection
    if not isinstance(dbapi_conn, psycopg.Connection) or _observed(conn):
        with _translated():
            return conn.exec_driver_sql(sql, params).all()
    cur = fairy.info.get(_CURSOR)
    if cur is None or cur.closed or cur.connection is not dbapi_conn:
        cur = fairy.info[_CURSOR] = dbapi_conn.cursor()
    try:
        cur.execute(sql, params)
        return cur.fetchall()
    except psycopg.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_conn, cur)
        if lost:
            conn.invalidate(exc)
        wrapped = sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error, connection_invalidated=lost,
                                             dialect=conn.dialect)
        with _translated():
            raise wrapped from exc
    except BaseException as exc:
        if not isinstance(exc, Exception):  # interrupted mid-statement (Ctrl-C, cancelled): state unknown
            conn.invalidate(exc)
        raise


def unlocked_sequences_for_tests(
    conn: sa.Connection, counts: KeyCounts, opts: dict[str, Any]
) -> dict[tuple[str, bytes], int]:
    """BROKEN ON PURPOSE: ``max(key_seq) + n`` from the snapshot, no lock. Only for proving the order test fails."""
    out: dict[tuple[str, bytes], int] = {}
    for (t, k), n in counts.items():
        q = sa.select(sa.func.coalesce(sa.func.max(event.c.key_seq), 0)).where(event.c.topic == t, event.c.key == k)
        out[(t, k)] = int(conn.execute(q, execution_options=opts).scalar_one()) + n
    return out


# None: the locked single statement above. Only tests/integration/write/test_commit_order.py swaps in another
# sequencer, to show that broken ordering is detected.
sequencer: Sequencer | None = None


def insert_events(
    conn: sa.Connection, prepared: Sequence[Prepared], *, traceparent: str | None, schema: str
) -> list[StoredEvent]:
    """Assign key sequences and insert every event, in one statement. Never commits."""
    if sequencer is None and len(prepared) == 1:
        return [_insert_one(conn, prepared[0], traceparent=traceparent, schema=schema)]
    counts: KeyCounts = {}
    nth: list[int | None] = []
    for p in prepared:
        if p.key is None:
            nth.append(None)
            continue
        tk = (p.event.topic, p.key)
        counts[tk] = counts.get(tk, 0) + 1
        nth.append(counts[tk])
    if sequencer is not None:
        return _insert_with(sequencer, conn, prepared, counts=counts, nth=nth, traceparent=traceparent,
                            schema=schema)
    params = {
        "event_id": [p.event.id for p in prepared],
        "topic": [p.event.topic for p in prepared],
        "key": [p.key for p in prepared],
        "shard": [p.shard for p in prepared],
        "payload": [p.payload for p in prepared],
        "content_type": [p.event.content_type for p in prepared],
        "type": [p.event.type for p in prepared],
        "source": [p.event.source for p in prepared],
        "subject": [p.event.subject for p in prepared],
        "time": [p.event.time for p in prepared],
        "headers": [_headers_json(p) for p in prepared],
        "n": [None if p.key is None else counts[(p.event.topic, p.key)] for p in prepared],
        "nth": nth,
        "traceparent": traceparent,
    }
    rows = _execute(conn, _sql(schema, False), params)
    return [
        StoredEvent(id=r[0], event_id=p.event.id, topic=p.event.topic, key=p.key, key_seq=r[1], shard=p.shard)
        for p, r in zip(prepared, rows, strict=True)
    ]


def _insert_one(conn: sa.Connection, p: Prepared, *, traceparent: str | None, schema: str) -> StoredEvent:
    """The hot path, one event per call: scalar parameters, one row back."""
    e = p.event
    params = {
        "event_id": e.id, "topic": e.topic, "key": p.key, "shard": p.shard, "payload": p.payload,
        "content_type": e.content_type, "type": e.type, "source": e.source, "subject": e.subject,
        "time": e.time, "headers": _headers_json(p), "traceparent": traceparent,
    }
    ((row_id, key_seq),) = _execute(conn, _sql(schema, True), params)
    return StoredEvent(id=row_id, event_id=e.id, topic=e.topic, key=p.key, key_seq=key_seq, shard=p.shard)


def _headers_json(p: Prepared) -> str:
    return json.dumps(p.headers) if p.headers else "[]"


def _insert_with(
    seq: Sequencer, conn: sa.Connection, prepared: Sequence[Prepared], *, counts: KeyCounts,
    nth: list[int | None], traceparent: str | None, schema: str,
) -> list[StoredEvent]:
    """The test-only path: sequences from ``seq``, then a plain multi-row INSERT."""
    tm = translate_map(schema)
    opts: dict[str, Any] = {"schema_translate_map": tm} if tm else {}
    with _translated():
        last = seq(conn, counts, opts) if counts else {}
        stored: list[StoredEvent] = []
        rows: list[dict[str, Any]] = []
        for p, k in zip(prepared, nth, strict=True):
            e, key_seq = p.event, None
            if p.key is not None and k is not None:
                key_seq = last[(e.topic, p.key)] - counts[(e.topic, p.key)] + k
            stored.append(StoredEvent(id=0, event_id=e.id, topic=e.topic, key=p.key, key_seq=key_seq, shard=p.shard))
            rows.append({"event_id": e.id, "topic": e.topic, "key": p.key, "shard": p.shard, "payload": p.payload,
                         "content_type": e.content_type, "type": e.type, "source": e.source, "subject": e.subject,
                         "time": e.time, "headers": p.headers, "traceparent": traceparent, "key_seq": key_seq})
        result = conn.execute(sa.insert(event).returning(event.c.id, event.c.event_id), rows, execution_options=opts)
        ids = {r.event_id: r.id for r in result}
    return [replace(s, id=ids[s.event_id]) for s in stored]


def select_pending(
    conn: sa.Connection, *, schema: str, topic: str | None, type_: str | None, key: bytes | bool | None
) -> list[sa.Row[Any]]:
    """Pending (unpublished, not dead) events in id order, for ``outbox.testing``. ``key=True`` means any key."""
    tm = translate_map(schema)
    q = sa.select(event).where(event.c.published_at.is_(None), event.c.dead_at.is_(None)).order_by(event.c.id)
    if topic is not None:
        q = q.where(event.c.topic == topic)
    if type_ is not None:
        q = q.where(event.c.type == type_)
    if key is None:
        q = q.where(event.c.key.is_(None))
    elif isinstance(key, bytes):
        q = q.where(event.c.key == key)
    with translate_errors("listing pending events"):
        return list(conn.execute(q, execution_options={"schema_translate_map": tm} if tm else {}))
