"""Design (c): an id cursor behind a proven visibility horizon, read through ``(shard, id)``.

The claim floor of docs/decisions/015 turned into the position itself. Once per round the relay reads the id
sequence's last value ``M``, *then* takes an xid of its own, the horizon ``h`` (one statement: the sequence is
scanned before the target list that assigns the xid is evaluated). Every transaction that drew an id up to ``M``
had its xid before (``enqueue`` takes its xid before it draws ids; identity sequences have CACHE 1), so below
``h``. Once a later snapshot's ``xmin`` reaches ``h``, all of them have ended: every row with id ≤ ``M`` that
will ever exist is visible, and the shard's rows in ``(cursor, M]`` are claimed by a plain range scan in id order
(per-key commit order), with no visibility filter and no per-row state.

The cost of that simplicity: ``xmin`` is cluster-wide, so any transaction that stays open, on any table, holds
every shard's horizon back. The long-writer scenario shows it.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bench.storage_v2 import tables
from bench.storage_v2.design import Design, Progress, decode_key
from bench.storage_v2.sink import Row
from bench.storage_v2.snapshot import _COLS


class Horizon(Design):
    name = "horizon"
    schema = "sv2_horizon"
    statements = {"claim": "%sv2:horizon:claim%", "tick": "%sv2:horizon:tick%", "progress": "%sv2:progress%"}

    def create(self, admin: psycopg.Connection[Any]) -> None:
        tables.create(admin, self.schema, [f'CREATE INDEX ix_event_shard_id ON "{self.schema}".event (shard, id)'])

    def open(self) -> None:
        s = f'"{self.schema}"'
        self._c = psycopg.connect(self.dsn, autocommit=True)
        # The tick's xid and commit need not be durable (a lost tick is only a later horizon): as the real
        # claim does, it turns synchronous_commit off for its own implicit transaction alone.
        self._tick = (f"SELECT /* sv2:horizon:tick */ m.v, pg_current_xact_id()::text::int8, "
                      f"pg_snapshot_xmin(pg_current_snapshot())::text::int8 "
                      f"FROM (SELECT last_value AS v FROM {s}.event_id_seq OFFSET 0) m "
                      "WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL")
        self._claim = (f"SELECT /* sv2:horizon:claim */ {_COLS.format(s=s)} FROM {s}.event e "
                       "WHERE e.shard = %(shard)s AND e.id > %(after)s AND e.id <= %(upto)s ORDER BY e.id "
                       "LIMIT %(n)s")
        self._progress = Progress(self.schema)
        self.cursor = dict.fromkeys(range(self.shards), 0)
        self.final = 0  # every row with an id up to here is visible, or will never exist
        self._candidates: list[tuple[int, int]] = []  # (M, horizon), oldest first

    def round(self) -> int:
        row = self._c.execute(self._tick).fetchone()
        assert row is not None
        m, horizon, xmin = (int(x) for x in row)
        done = [c for c in self._candidates if c[1] <= xmin]
        self._candidates = [*[c for c in self._candidates if c[1] > xmin][-63:], (m, horizon)]
        if done:
            self.final = max(self.final, *(c[0] for c in done))
        return sum(self._step(shard) for shard in range(self.shards))

    def _step(self, shard: int) -> int:
        if self.cursor[shard] >= self.final:
            return 0
        rows = self._c.execute(self._claim, {"shard": shard, "after": self.cursor[shard], "upto": self.final,
                                             "n": self.batch}).fetchall()
        if len(rows) < self.batch:
            self.cursor[shard] = self.final  # nothing else of the shard up to the horizon
        if not rows:
            return 0
        if any(r[13] for r in rows):
            raise AssertionError("the bench writes no dead letters: a held row here is a bug")
        if len(rows) == self.batch:
            self.cursor[shard] = int(rows[-1][0])
        out = [Row(int(r[0]), shard, decode_key(r[3]), r[12]) for r in rows]
        position = str(self.cursor[shard])
        p, first = self.sink.commit(shard, out, {"after_id": self.cursor[shard]})
        self._c.execute(self._progress.sql, self._progress.params(shard, out, p, first, position))
        return len(out)

    def close(self) -> None:
        self._c.close()

    def extra(self) -> dict[str, Any]:
        return {"final_id": self.final}
