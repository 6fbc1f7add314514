"""The reconciler's SQL: bucketed digests, drill-down rows, order/stuck/dead queries, checkpoints, trace.

Everything heavy is a single-pass aggregate computed *inside* Postgres (docs/decisions/020-reconciler-digests.md):
per id bucket ``count(*)`` and ``bit_xor`` of a 64-bit row hash, on the outbox side (``event``) and on each
consumer database (``inbox``) separately; Python only compares the small results and drills into buckets that
differ. The row hash binds the outbox id, the event id, the Kafka position and the key sequence, so an
acknowledgement of the wrong event, or of a copy at another position, changes the digest.

Two hash functions: ``hash`` (Postgres's built-in ``uuid_hash_extended``/``hashint8extended``, fast; identical
on every server of the same byte order) and ``md5`` (portable anywhere, about 2x slower).

Copies received from other Kafka positions, and the replays that explain them, are in
:mod:`outbox.store.audit_copies`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.store import translate_errors

# The row hash, over (outbox id, event id, partition, offset, key_seq); {i} is the outbox id column.
HASHES = {
    "hash": ("uuid_hash_extended(event_id, {i}) # hashint8extended(coalesce(kafka_offset, -1), "
             "coalesce(kafka_partition, -1)) # hashint8extended(coalesce(key_seq, 0), 7)"),
    "md5": ("('x' || substr(md5({i}::text || ':' || event_id::text || ':' || coalesce(kafka_partition, -1) || ':' "
            "|| coalesce(kafka_offset, -1) || ':' || coalesce(key_seq, 0)), 1, 16))::bit(64)::bigint"),
}
LAT_BIN = "floor(ln(greatest(1.0, date_part('epoch', {a} - {b}) * 1000.0)) / ln(2.0))::int"
STATE = ("CASE WHEN dead_at IS NOT NULL THEN 'dead' WHEN published_at IS NULL THEN "
         "(CASE WHEN created_at < :stuck_before THEN 'stuck' ELSE 'pending' END) "
         "WHEN published_at <= :cutoff THEN 'settled' ELSE 'inflight' END")
SAMPLE = "generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint), CAST(:step AS bigint))"
EXPECTED = "published_at <= :cutoff AND dead_at IS NULL AND topic = ANY(:topics)"


def _q(schema: str, table: str) -> str:
    return f'"{schema}"."{table}"'


def _rows(conn: sa.Connection, doing: str, sql: str, **params: Any) -> list[Any]:
    with translate_errors(doing):
        return list(conn.execute(sa.text(sql), params))


def tune(conn: sa.Connection, work_mem: str = "64MB") -> None:
    """Session settings for one big aggregate: enough memory for the hash table, read-only."""
    with translate_errors("preparing the audit session"):
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        conn.execute(sa.text(f"SET LOCAL work_mem = '{work_mem}'"))


# --- window and context ---------------------------------------------------------------------------------------
def now(conn: sa.Connection) -> datetime:
    with translate_errors("reading the database clock"):
        return conn.execute(sa.text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]


def id_bounds(conn: sa.Connection, schema: str, since: datetime | None, until: datetime | None
              ) -> tuple[int | None, int | None]:
    """min/max outbox id (optionally of the rows created in [since, until))."""
    where = ["TRUE"]
    if since is not None:
        where.append("created_at >= :since")
    if until is not None:
        where.append("created_at < :until")
    rows = _rows(conn, "resolving the window", f"SELECT min(id), max(id) FROM {_q(schema, 'event')} "
                 f"WHERE {' AND '.join(where)}", since=since, until=until)
    return rows[0][0], rows[0][1]


def created_at(conn: sa.Connection, schema: str, lo: int) -> datetime | None:
    rows = _rows(conn, "reading the window start", f"SELECT created_at FROM {_q(schema, 'event')} "
                 "WHERE id >= :lo ORDER BY id LIMIT 1", lo=lo)
    return rows[0][0] if rows else None


def subscriptions(conn: sa.Connection, schema: str) -> dict[str, list[str]]:
    rows = _rows(conn, "reading subscriptions", f"SELECT consumer_group, topic FROM {_q(schema, 'subscription')} "
                 "ORDER BY 1, 2")
    out: dict[str, list[str]] = {}
    for g, t in rows:
        out.setdefault(g, []).append(t)
    return out


def has_acks(conn: sa.Connection, schema: str, group: str) -> bool:
    rows = _rows(conn, "looking for acknowledgements", f"SELECT EXISTS (SELECT 1 FROM {_q(schema, 'inbox')} "
                 "WHERE consumer_group = :g)", g=group)
    return bool(rows[0][0])


# --- level 0: the single-pass scans ---------------------------------------------------------------------------
def outbox_cells(conn: sa.Connection, schema: str, lo: int, hi: int, *, bits: int, algo: str, cutoff: datetime,
                 stuck_before: datetime) -> list[Any]:
    """(topic, bucket, state, n, xor) over ids [lo, hi]: the digests and the state counts in one pass."""
    h = HASHES[algo].format(i="id")
    sql = (f"SELECT topic, id >> {bits} AS b, {STATE} AS state, count(*) AS n, bit_xor({h}) AS h "
           f"FROM {_q(schema, 'event')} WHERE id BETWEEN :lo AND :hi GROUP BY 1, 2, 3")
    return _rows(conn, "digesting outbox events", sql, lo=lo, hi=hi, cutoff=cutoff, stuck_before=stuck_before)


def ack_cells(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, bits: int, algo: str
              ) -> list[Any]:
    """(bucket, dead-lettered?, n, xor) of ``group``'s acknowledgements of ids [lo, hi]."""
    h = HASHES[algo].format(i="outbox_id")
    sql = (f"SELECT outbox_id >> {bits} AS b, outcome = 'dead_lettered' AS dead, count(*) AS n, bit_xor({h}) AS h "
           f"FROM {_q(schema, 'inbox')} WHERE consumer_group = :g AND outbox_id BETWEEN :lo AND :hi "
           "GROUP BY 1, 2")
    return _rows(conn, f"digesting acknowledgements of {group!r}", sql, g=group, lo=lo, hi=hi)


# Charts need distributions, not exact counts: every ``step``-th id of the window (an index lookup each), so
# their cost is bounded whatever the window size. ``step`` is 1 for windows up to the sample size.
def outbox_chart(conn: sa.Connection, schema: str, lo: int, hi: int, *, step: int, t0: float, t1: float,
                 nbins: int) -> list[Any]:
    """(created bin, published bin, publish-latency bin, n) of the sampled ids."""
    sql = (f"SELECT width_bucket(date_part('epoch', e.created_at), :t0, :t1, {nbins}) AS cb, "
           f"width_bucket(date_part('epoch', e.published_at), :t0, :t1, {nbins}) AS pb, "
           f"{LAT_BIN.format(a='e.published_at', b='e.created_at')} AS lb, count(*) AS n "
           f"FROM {SAMPLE} s(i) JOIN {_q(schema, 'event')} e ON e.id = s.i "
           "WHERE e.dead_at IS NULL GROUP BY 1, 2, 3")
    return _rows(conn, "sampling outbox timings", sql, lo=lo, hi=hi, step=step, t0=t0, t1=t1)


def ack_chart(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, step: int) -> list[Any]:
    """(delivery-latency bin, n) of the group's acknowledgements of the sampled ids."""
    sql = (f"SELECT {LAT_BIN.format(a='i.processed_at', b='i.event_time')} AS lb, count(*) AS n "
           f"FROM {SAMPLE} s(x) JOIN {_q(schema, 'inbox')} i "
           "ON i.consumer_group = :g AND i.outbox_id = s.x GROUP BY 1")
    return _rows(conn, f"sampling delivery latency of {group!r}", sql, g=group, lo=lo, hi=hi, step=step)


# --- level 1: sub-bucket digests and rows, only where buckets differ ------------------------------------------
def outbox_sub(conn: sa.Connection, schema: str, lo: int, hi: int, *, bits: int, algo: str, cutoff: datetime,
               topics: Sequence[str]) -> dict[int, tuple[int, int]]:
    h = HASHES[algo].format(i="id")
    sql = (f"SELECT id >> {bits}, count(*), bit_xor({h}) FROM {_q(schema, 'event')} "
           f"WHERE id BETWEEN :lo AND :hi AND {EXPECTED} GROUP BY 1")
    rows = _rows(conn, "digesting an outbox bucket", sql, lo=lo, hi=hi, cutoff=cutoff, topics=list(topics))
    return {int(b): (int(n), int(x or 0)) for b, n, x in rows}


def ack_sub(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, bits: int, algo: str
            ) -> dict[int, tuple[int, int]]:
    h = HASHES[algo].format(i="outbox_id")
    sql = (f"SELECT outbox_id >> {bits}, count(*), bit_xor({h}) FROM {_q(schema, 'inbox')} "
           "WHERE consumer_group = :g AND outbox_id BETWEEN :lo AND :hi GROUP BY 1")
    rows = _rows(conn, "digesting an inbox bucket", sql, g=group, lo=lo, hi=hi)
    return {int(b): (int(n), int(x or 0)) for b, n, x in rows}


def outbox_rows(conn: sa.Connection, schema: str, lo: int, hi: int, *, cutoff: datetime, stuck_before: datetime
                ) -> list[Any]:
    sql = (f"SELECT id, event_id, topic, key, key_seq, kafka_partition, kafka_offset, {STATE} AS state "
           f"FROM {_q(schema, 'event')} WHERE id BETWEEN :lo AND :hi ORDER BY id")
    return _rows(conn, "listing outbox rows", sql, lo=lo, hi=hi, cutoff=cutoff, stuck_before=stuck_before)


def expected_rows(conn: sa.Connection, schema: str, lo: int, hi: int, *, cutoff: datetime, topics: Sequence[str],
                  limit: int) -> list[Any]:
    sql = (f"SELECT id, event_id, topic, key, key_seq FROM {_q(schema, 'event')} "
           f"WHERE id BETWEEN :lo AND :hi AND {EXPECTED} ORDER BY id LIMIT :limit")
    return _rows(conn, "listing expected events", sql, lo=lo, hi=hi, cutoff=cutoff, topics=list(topics),
                 limit=limit)


def ack_rows(conn: sa.Connection, schema: str, group: str, lo: int, hi: int) -> list[Any]:
    """The group's acknowledgements of ids [lo, hi], each with the other positions it was received from."""
    sql = (f"SELECT i.outbox_id, i.event_id, i.topic, i.key, i.key_seq, i.kafka_partition, i.kafka_offset, "
           f"ARRAY(SELECT r.kafka_partition || '@' || r.kafka_offset FROM {_q(schema, 'inbox_redelivery')} r "
           "WHERE r.consumer_group = i.consumer_group AND r.event_id = i.event_id ORDER BY r.id) AS copies "
           f"FROM {_q(schema, 'inbox')} i WHERE i.consumer_group = :g AND i.outbox_id BETWEEN :lo AND :hi "
           "ORDER BY i.outbox_id, i.id")
    return _rows(conn, "listing inbox rows", sql, g=group, lo=lo, hi=hi)


# --- per-group checks on the consumer side --------------------------------------------------------------------
def out_of_order(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, cap: int
                 ) -> tuple[int, list[Any]]:
    """Acks whose key_seq is below one already acknowledged for the same key (ack order = inbox id order).

    Reads ``ix_inbox_group_key_order`` presorted, so no sort of the whole inbox is needed.
    """
    # Only columns of the index in the window (an index-only scan); event ids are fetched for the few listed.
    # At least one row even with cap 0: it carries the total (the caller names at most ``cap``).
    sql = (f"SELECT w.total, w.outbox_id, w.topic, w.key, w.key_seq, w.after_seq, i.event_id FROM ("
           "SELECT count(*) OVER () AS total, * FROM (SELECT id, outbox_id, topic, key, key_seq, "
           "max(key_seq) OVER (PARTITION BY topic, key ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND "
           "1 PRECEDING) AS after_seq "
           f"FROM {_q(schema, 'inbox')} WHERE consumer_group = :g AND key IS NOT NULL "
           "AND outbox_id BETWEEN :lo AND :hi) v WHERE key_seq < after_seq ORDER BY outbox_id "
           "LIMIT greatest(:cap, 1)) w "
           f"JOIN {_q(schema, 'inbox')} i ON i.id = w.id ORDER BY w.outbox_id")
    rows = _rows(conn, f"checking the ack order of {group!r}", sql, g=group, lo=lo, hi=hi, cap=cap)
    return (int(rows[0].total) if rows else 0), rows


def consumer_dead(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, cap: int
                  ) -> list[Any]:
    sql = (f"SELECT outbox_id, event_id, topic, key, key_seq, attempts, error, processed_at "
           f"FROM {_q(schema, 'inbox')} WHERE consumer_group = :g AND outcome = 'dead_lettered' "
           "AND outbox_id BETWEEN :lo AND :hi ORDER BY outbox_id LIMIT :cap")
    return _rows(conn, f"listing dead letters of {group!r}", sql, g=group, lo=lo, hi=hi, cap=cap)


# --- outbox side: stuck and dead-lettered rows ----------------------------------------------------------------
def stuck(conn: sa.Connection, schema: str, lo: int, hi: int, *, stuck_before: datetime, cap: int
          ) -> list[Any]:
    sql = ("SELECT id, event_id, topic, key, key_seq, created_at, attempts, last_error "
           f"FROM {_q(schema, 'event')} WHERE published_at IS NULL AND dead_at IS NULL AND id BETWEEN :lo AND :hi "
           "AND created_at < :before ORDER BY id LIMIT :cap")
    return _rows(conn, "listing stuck events", sql, lo=lo, hi=hi, before=stuck_before, cap=cap)


def relay_dead(conn: sa.Connection, schema: str, lo: int, hi: int, *, cap: int) -> list[Any]:
    sql = (f"SELECT e.id, e.event_id, e.topic, e.key, e.key_seq, e.dead_at, d.reason, d.attempts "
           f"FROM {_q(schema, 'event')} e LEFT JOIN {_q(schema, 'dead_letter')} d ON d.event_pk = e.id "
           "WHERE e.dead_at IS NOT NULL AND e.id BETWEEN :lo AND :hi ORDER BY e.id LIMIT :cap")
    return _rows(conn, "listing dead-lettered events", sql, lo=lo, hi=hi, cap=cap)


# --- checkpoints ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    consumer_group: str
    id_lo: int
    id_hi: int
    expected: int
    acknowledged: int
    digest: str
    topics: tuple[str, ...]


def checkpoint_ranges(conn: sa.Connection, schema: str, group: str) -> list[tuple[int, int]]:
    rows = _rows(conn, "reading checkpoints", f"SELECT id_lo, id_hi FROM {_q(schema, 'reconcile_checkpoint')} "
                 "WHERE consumer_group = :g ORDER BY id_lo", g=group)
    return [(int(a), int(b)) for a, b in rows]


def write_checkpoints(conn: sa.Connection, schema: str, cps: Sequence[Checkpoint], report_sha256: str) -> None:
    """Record proven ranges; also mirror each group's topics into this (producer) database's subscriptions,
    which is what pruning consults when the consumers live in other databases."""
    with translate_errors("recording reconcile checkpoints"):
        for c in cps:
            conn.execute(sa.text(
                f"INSERT INTO {_q(schema, 'reconcile_checkpoint')} (consumer_group, id_lo, id_hi, expected, "
                "acknowledged, digest, report_sha256) VALUES (:g, :lo, :hi, :e, :a, :d, :s)"),
                {"g": c.consumer_group, "lo": c.id_lo, "hi": c.id_hi, "e": c.expected, "a": c.acknowledged,
                 "d": c.digest, "s": report_sha256})
            for t in c.topics:
                conn.execute(sa.text(f"INSERT INTO {_q(schema, 'subscription')} (consumer_group, topic) "
                                     "VALUES (:g, :t) ON CONFLICT DO NOTHING"), {"g": c.consumer_group, "t": t})


# --- trace ----------------------------------------------------------------------------------------------------
def trace_event(conn: sa.Connection, schema: str, event_id: uuid.UUID | None, outbox_id: int | None
                ) -> Any:
    cond = "e.event_id = :eid" if event_id is not None else "e.id = :oid"
    sql = (f"SELECT e.id, e.event_id, e.topic, e.key, e.key_seq, e.shard, e.type, e.source, e.subject, e.time, "
           "e.tx_id, e.created_at, e.published_at, e.kafka_partition, e.kafka_offset, e.relay_epoch, e.attempts, "
           "e.last_error, e.dead_at, d.reason AS dead_reason, d.resolution, d.resolved_at "
           f"FROM {_q(schema, 'event')} e LEFT JOIN {_q(schema, 'dead_letter')} d ON d.event_pk = e.id "
           f"WHERE {cond}")
    rows = _rows(conn, "tracing an event", sql, eid=event_id, oid=outbox_id)
    return rows[0] if rows else None


def trace_acks(conn: sa.Connection, schema: str, event_id: uuid.UUID) -> list[Any]:
    sql = (f"SELECT i.consumer_group, i.topic, i.kafka_partition, i.kafka_offset, i.received_at, i.processed_at, "
           "i.outcome, i.attempts, i.error, (SELECT array_agg(r.kafka_partition || '@' || r.kafka_offset) "
           f"FROM {_q(schema, 'inbox_redelivery')} r WHERE r.consumer_group = i.consumer_group "
           "AND r.event_id = i.event_id) AS copies "
           f"FROM {_q(schema, 'inbox')} i WHERE i.event_id = :eid ORDER BY i.received_at")
    return _rows(conn, "tracing acknowledgements", sql, eid=event_id)
