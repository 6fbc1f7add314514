"""Design (a): PgQ-style snapshot batches over ``xid8``, read through ``(shard, tx_id, id)``.

A shard's position is a pair of snapshots and a cursor. The batch between the previous snapshot ``prev`` and the
current one ``cur`` is every row whose ``tx_id`` is visible in ``cur`` and not in ``prev``: committed, in whole
transactions, in commit order *between* batches. As in PgQ (``pgq.batch_event_sql``), the batch is read as two
index ranges, so a transaction open at ``prev`` costs an exact lookup rather than a rescan:

* ``tx_id >= prev.xmax`` (transactions that got their xid after ``prev``), and
* ``tx_id = ANY(prev.xip)`` (those running at ``prev``; the ones still running are invisible and skipped).

*Within* a batch rows go in id order, which is per-key commit order (``enqueue`` draws a key's ids under the
key's row lock). ``(tx_id, id)`` order would not be: a transaction can take its xid before another one that
commits first and writes the same key. So the batch is sorted: the first claim of a batch takes the new snapshot
*in the claim statement itself* (``pg_current_snapshot()`` is the statement's MVCC snapshot, so MVCC visibility
is exactly "visible in cur"); it sorts the batch's ids once and returns the first ``batch`` rows, and the rest of
the ids as one array when the batch is larger (a big transaction, or a backlog). Those are then claimed by id,
``batch`` at a time: the cursor. (A relay resuming inside a batch would sort its rest again, with the same
ranges filtered by ``pg_visible_in_snapshot(tx_id, cur)`` and ``id > cursor``.)

After each Kafka transaction one narrow progress row is inserted (``relay_progress``); the position itself
(``prev``, ``cur``, the last id of the batch published) rides in the checkpoint record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.storage_v2 import tables
from bench.storage_v2.design import Design, Progress, decode_key
from bench.storage_v2.sink import Row

_COLS = """e.id, e.event_id, e.topic, e.key, e.payload, e.content_type, e.type, e.source, e.subject,
    CASE WHEN e."time" BETWEEN '0001-01-02 00:00:00+00' AND '9999-12-30 23:59:59.999999+00' THEN e."time" END,
    CASE WHEN e.headers = '[]'::jsonb THEN NULL ELSE e.headers::text END, e.traceparent, e.key_seq,
    EXISTS (SELECT 1 FROM {s}.dead_letter d WHERE d.resolved_at IS NULL AND d.topic = e.topic AND d.key = e.key)"""


def _sql(schema: str, order: str = "id") -> tuple[str, str]:
    """The two claim statements; ``order`` is the order within a batch: ``id`` (correct), or ``tx_id, id`` for
    the broken variant that ``bench.storage_v2.order`` shows to reorder a key."""
    s = f'"{schema}"'
    cols = _COLS.format(s=s)
    # The markers sit after the first keyword: pg_stat_statements keeps a statement's text from its first token.
    # One pass over the batch's index entries: its ids sorted once; the first ``n`` rows come back, the rest of
    # the ids (a batch larger than one claim) as one array, claimed by id afterwards.
    first = f"""WITH /* sv2:snapshot:claim */ b AS MATERIALIZED (
    SELECT {order} FROM {s}.event WHERE shard = %(shard)s AND tx_id >= %(xmax)s::xid8
    UNION ALL
    SELECT {order} FROM {s}.event WHERE shard = %(shard)s AND tx_id = ANY(%(xip)s::xid8[])
), a AS MATERIALIZED (SELECT coalesce(array_agg(id ORDER BY {order}), '{{}}') AS ids FROM b)
SELECT CASE WHEN e.id = (SELECT ids[1] FROM a) THEN pg_current_snapshot()::text END,
       CASE WHEN e.id = (SELECT ids[1] FROM a) THEN (SELECT ids[%(n)s + 1:] FROM a) END, {cols}
FROM {s}.event e WHERE e.id = ANY(CAST((SELECT ids[:%(n)s] FROM a) AS int8[])) ORDER BY {_rows(order)}"""
    by_id = f"""SELECT /* sv2:snapshot:claim */ NULL, NULL, {cols}
FROM {s}.event e WHERE e.id = ANY(%(ids)s::int8[]) ORDER BY {_rows(order)}"""
    return first, by_id


def _rows(order: str) -> str:
    return ", ".join(f"e.{c.strip()}" for c in order.split(","))


@dataclass(frozen=True)
class Snap:
    """A pg_snapshot: ``xmin:xmax:xip,...``."""

    text: str

    # As text: psycopg sends a Python int as an integer type, which has no cast to xid8.
    @property
    def xmax(self) -> str:
        return self.text.split(":")[1]

    @property
    def xip(self) -> list[str]:
        tail = self.text.split(":")[2]
        return tail.split(",") if tail else []


EVERYTHING = Snap("1:1:")  # a position before any row: every transaction is newer


@dataclass
class Shard:
    prev: Snap = EVERYTHING
    cur: Snap | None = None  # set while a batch larger than one claim is being read
    rest: list[int] = field(default_factory=list)  # its remaining ids, sorted


class Snapshot(Design):
    name = "snapshot"
    schema = "sv2_snapshot"
    statements = {"claim": "%sv2:snapshot:claim%", "progress": "%sv2:progress%"}
    order = "id"

    def create(self, admin: psycopg.Connection[Any]) -> None:
        tables.create(admin, self.schema,
                      [f'CREATE INDEX ix_event_batch ON "{self.schema}".event (shard, tx_id, id)'])

    def open(self) -> None:
        self._c = psycopg.connect(self.dsn, autocommit=True)
        self._first, self._by_id = _sql(self.schema, self.order)
        self._progress = Progress(self.schema)
        self.state = {s: Shard() for s in range(self.shards)}
        self.batches = 0
        self.sorted_batches = 0

    def round(self) -> int:
        return sum(self._step(shard) for shard in range(self.shards))

    def _step(self, shard: int) -> int:
        st = self.state[shard]
        if st.cur is None:  # a new batch: the claim takes its snapshot
            res = self._c.execute(self._first, {"shard": shard, "xmax": st.prev.xmax, "xip": st.prev.xip,
                                                "n": self.batch}).fetchall()
            if not res:  # nothing new: the next batch starts from the same snapshot
                return 0
            cur, st.rest = Snap(res[0][0]), list(res[0][1])
            rows = [r[2:] for r in res]
            if st.rest:  # a batch larger than one claim: its rest was sorted by the same pass
                st.cur = cur
                self.sorted_batches += 1
            else:
                st.prev = cur
            self.batches += 1
            position = f"{st.prev.text}|{cur.text if st.cur else ''}|{rows[-1][0]}"
        else:
            chunk, st.rest = st.rest[:self.batch], st.rest[self.batch:]
            rows = [r[2:] for r in self._c.execute(self._by_id, {"ids": chunk}).fetchall()]
            position = f"{st.prev.text}|{st.cur.text}|{chunk[-1]}"
            if not st.rest:
                st.prev, st.cur = st.cur, None
        if not rows:
            return 0
        if any(r[13] for r in rows):
            raise AssertionError("the bench writes no dead letters: a held row here is a bug")
        out = [Row(int(r[0]), shard, decode_key(r[3]), r[12]) for r in rows]
        p, first = self.sink.commit(shard, out, {"snapshot": position})
        self._c.execute(self._progress.sql, self._progress.params(shard, out, p, first, position))
        return len(out)

    def close(self) -> None:
        self._c.close()

    def extra(self) -> dict[str, Any]:
        return {"batches": self.batches, "sorted_batches": self.sorted_batches}
