"""The reconciler's SQL about second Kafka copies: audited replays (producer side), copies received (consumer side).

A group that receives an event again from another Kafka position records that copy in ``inbox_redelivery``.
Whether the copy is a *duplicate publication* or an *audited replay* depends on ``replay_audit``, which lives
beside the outbox, while the copies live in each consumer's database. So the replayed id runs are read once on
the producer (:func:`replay_audits`) and shipped to the consumer side as one ``int8multirange`` per audit: each
copy is matched by a binary search in Postgres, never by a query per event (docs/decisions/030).

* :func:`copies`, in one pass over the copies the group received: per acknowledged event received from other
  positions, how many copies and which replays cover its id: ``replayed`` when each copy is explained by a
  replay, ``duplicated`` otherwise (counts exact, rows capped per kind); and the digest correction that keeps
  replayed buckets from being drilled. A replayed event's outbox row records the re-published position, while
  the group acknowledged the first copy; per sub-bucket the correction is ``xor(hash at the acknowledged
  position) ^ xor(hash at the copy)``, so ``ack digest ^ fix`` equals the outbox digest when every replayed copy
  is where the outbox says. Its cost follows the number of copies, not the size of the inbox.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from outbox.store.audit import HASHES, _q, _rows

Runs = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ReplayAudit:
    """One ``replay_audit`` row: who replayed, when, and its replayed id runs that overlap the window."""

    id: int
    actor: str
    created_at: datetime
    event_count: int
    runs: Runs  # ascending, disjoint, clipped to the window


def replay_audits(conn: sa.Connection, schema: str, lo: int, hi: int) -> list[ReplayAudit]:
    """Replay audits with at least one replayed id in ``[lo, hi]``; the runs are filtered in Postgres."""
    # One row per audit, its run bounds as two arrays: a sparse replay may have ~10^5 runs.
    sql = ("SELECT a.id, a.actor, a.created_at, a.event_count, array_agg(greatest(x.lo, :lo)) AS los, "
           "array_agg(least(x.hi, :hi)) AS his "
           f"FROM {_q(schema, 'replay_audit')} a CROSS JOIN LATERAL (SELECT (r.run ->> 0)::bigint AS lo, "
           "(r.run ->> 1)::bigint AS hi FROM jsonb_array_elements(coalesce(a.selector -> 'replayed_id_ranges', "
           "'[]')) r(run)) x WHERE x.lo <= :hi AND x.hi >= :lo GROUP BY a.id ORDER BY a.id")
    return [ReplayAudit(int(r.id), r.actor, r.created_at, int(r.event_count), _disjoint(zip(r.los, r.his, strict=True)))
            for r in _rows(conn, "reading replay audits", sql, lo=lo, hi=hi)]


def _disjoint(runs: Iterable[tuple[int, int]]) -> Runs:
    merged: list[list[int]] = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return tuple((a, b) for a, b in merged)


def multirange(runs: Iterable[tuple[int, int]]) -> str:
    """The ``int8multirange`` literal of inclusive runs (Postgres merges overlaps)."""
    return "{" + ",".join(f"[{a},{b}]" for a, b in runs) + "}"


@dataclass(frozen=True)
class Copies:
    """What :func:`copies` found for one group in the window."""

    totals: dict[str, int]  # kind ('replayed' | 'duplicated') -> exact count of events
    named: list[Any]  # up to ``cap`` rows per kind, by outbox id
    fixes: dict[int, int]  # sub-bucket -> digest correction for its replayed acknowledgements


_NO_ROW = ("NULL::bigint AS outbox_id, NULL::uuid AS event_id, NULL::text AS topic, NULL::bytea AS key, "
           "NULL::bigint AS key_seq, NULL::int AS ack_partition, NULL::bigint AS ack_offset, NULL::text[] AS other, "
           "NULL::bigint[] AS audits")
_NULLS = "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"


def copies(conn: sa.Connection, schema: str, group: str, lo: int, hi: int, *, audits: Sequence[ReplayAudit],
           cap: int, bits: int, algo: str) -> Copies:
    """Events of the window this group received again from other Kafka positions, and the replays among them.

    An event whose id ``k`` replays re-queued may have up to ``k`` copies besides the acknowledged one: it is
    ``replayed``; with one copy more (or any copy of an id no replay re-queued) it is ``duplicated``. One pass
    over the copies (joined to their acknowledgements) gives the exact count per kind, up to ``cap`` named rows
    per kind (with ``audits``, the covering replay audit ids), and the digest corrections per ``bits``
    sub-bucket. A correction moves a replayed acknowledgement with one copy to that copy's position, which is
    the position the outbox records after the replay: the corrected digests then match without a drill-down.
    """
    inbox, copy, h = _q(schema, "inbox"), _q(schema, "inbox_redelivery"), HASHES[algo].format(i="outbox_id")
    # Without replays the query needs no multirange (Postgres 14+): the common case runs on any server. The
    # audits come back in the order given (ascending ids); one binary search per audit and copy.
    # (OFFSET 0 keeps the planner from inlining the subquery, which would evaluate it once per use.)
    covering = ("SELECT ARRAY(SELECT a.aid FROM unnest(CAST(:aids AS bigint[]), CAST(:mrs AS int8multirange[])) "
                "a(aid, mr) WHERE c.outbox_id <@ a.mr) AS audits OFFSET 0"
                ) if audits else "SELECT CAST('{}' AS bigint[]) AS audits"
    sql = (
        "WITH c AS (SELECT i.id, i.outbox_id, i.event_id, i.key_seq, i.kafka_partition AS ack_partition, "
        "i.kafka_offset AS ack_offset, count(*) AS n_copies, min(r.kafka_partition) AS copy_partition, "
        f"min(r.kafka_offset) AS copy_offset FROM {copy} r JOIN {inbox} i "
        "ON i.consumer_group = r.consumer_group AND i.event_id = r.event_id "
        "WHERE r.consumer_group = :g AND i.outbox_id BETWEEN :lo AND :hi GROUP BY i.id), "
        "v AS MATERIALIZED (SELECT c.*, a.audits, CASE WHEN c.n_copies <= cardinality(a.audits) THEN 'replayed' "
        f"ELSE 'duplicated' END AS kind FROM c CROSS JOIN LATERAL ({covering}) a), "
        "named AS ((SELECT id, kind, audits FROM v WHERE kind = 'replayed' ORDER BY outbox_id LIMIT :cap) UNION ALL "
        "(SELECT id, kind, audits FROM v WHERE kind = 'duplicated' ORDER BY outbox_id LIMIT :cap)) "
        f"SELECT 'total' AS what, kind, count(*) AS n, NULL::bigint AS h, {_NO_ROW} FROM v GROUP BY kind "
        "UNION ALL SELECT 'named', n.kind, NULL, NULL, i.outbox_id, i.event_id, i.topic, i.key, i.key_seq, "
        "i.kafka_partition, i.kafka_offset, ARRAY(SELECT r.kafka_partition || '@' || r.kafka_offset "
        f"FROM {copy} r WHERE r.consumer_group = i.consumer_group AND r.event_id = i.event_id "
        f"ORDER BY r.id), n.audits FROM named n JOIN {inbox} i ON i.id = n.id "
        # The row hash at the copy's position, then at the acknowledged one (the hash names bare columns).
        f"UNION ALL SELECT 'fix', NULL, s, x, {_NULLS} FROM (SELECT outbox_id >> {int(bits)} AS s, "
        f"bit_xor(at_copy # {h}) AS x FROM (SELECT outbox_id, event_id, key_seq, ack_partition AS kafka_partition, "
        f"ack_offset AS kafka_offset, at_copy FROM (SELECT outbox_id, event_id, key_seq, ack_partition, ack_offset, "
        f"{h} AS at_copy FROM (SELECT outbox_id, event_id, key_seq, ack_partition, ack_offset, copy_partition AS "
        "kafka_partition, copy_offset AS kafka_offset FROM v WHERE kind = 'replayed' AND n_copies = 1) x) y) z "
        "GROUP BY 1) f")
    rows = _rows(conn, f"reading copies received by {group!r}", sql, g=group, lo=lo, hi=hi, cap=cap,
                 aids=[a.id for a in audits], mrs=[multirange(a.runs) for a in audits])
    return Copies(totals={r.kind: int(r.n) for r in rows if r.what == "total"},
                  named=sorted((r for r in rows if r.what == "named"), key=lambda r: (r.kind, r.outbox_id)),
                  fixes={int(r.n): int(r.h or 0) for r in rows if r.what == "fix"})
