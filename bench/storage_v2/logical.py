"""Design (b): logical decoding through SQL functions (pgoutput, binary), no relay index and no per-row state.

Commit order comes from the WAL: one slot decodes the event table's inserts (an insert-only publication), and
each call of ``pg_logical_slot_peek_binary_changes`` returns whole committed transactions, in commit order, with
every column of every row, so the relay reads neither the heap nor an index. After the Kafka transactions of a
call, the slot is moved past them (``pg_replication_slot_advance``); the checkpoint's position is the commit
LSN, so the slot may lag it (a peek re-returns what the checkpoint already covers, which recovery skips).

One slot serves every shard here (one reader): ``batch * shards`` changes per call, so each shard's Kafka
transaction still carries up to ``batch`` rows. With ``slots > 1`` each shard group gets its own slot with a
row-filtered publication (``WHERE shard IN (...)``), the way shards would spread over relay instances; every such
slot decodes the whole WAL, which the measurement shows.

Held keys are checked by one query per call against the open dead letters (empty in the bench).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import psycopg

from bench.storage_v2 import tables
from bench.storage_v2.design import Design, Progress
from bench.storage_v2.pgoutput import Reader
from bench.storage_v2.sink import Row, Sink


def _lsn(v: int) -> str:
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


class Logical(Design):
    name = "logical"
    schema = "sv2_logical"

    def __init__(self, dsn: str, url: str, *, shards: int, batch: int, sink: Sink, slots: int = 1) -> None:
        super().__init__(dsn, url, shards=shards, batch=batch, sink=sink)
        self.slots = slots
        if slots > 1:
            self.name = f"logical-{slots}slots"
        self.statements = {"claim": "%pg_logical_slot_peek_binary_changes%",
                           "advance": "%pg_replication_slot_advance%", "held": "%sv2:logical:held%",
                           "progress": "%sv2:progress%"}

    def _groups(self) -> list[list[int]]:
        return [list(range(self.shards))[i::self.slots] for i in range(self.slots)]

    def create(self, admin: psycopg.Connection[Any]) -> None:
        for slot in admin.execute("SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sv2_logical%'"
                                  ).fetchall():
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot[0],))
        for pub in admin.execute("SELECT pubname FROM pg_publication WHERE pubname LIKE 'sv2_logical%'").fetchall():
            admin.execute(f'DROP PUBLICATION "{pub[0]}"'.encode())
        tables.create(admin, self.schema, [])
        for i, group in enumerate(self._groups()):
            where = "" if self.slots == 1 else f" WHERE (shard IN ({', '.join(map(str, group))}))"
            admin.execute(f'CREATE PUBLICATION sv2_logical_{i} FOR TABLE "{self.schema}".event{where} '
                          "WITH (publish = 'insert')".encode())
            admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (f"sv2_logical_{i}",))

    def open(self) -> None:
        self._c = psycopg.connect(self.dsn, autocommit=True)
        self._progress = Progress(self.schema)
        self._readers = [Reader() for _ in range(self.slots)]
        self._held = (f'SELECT /* sv2:logical:held */ topic, key FROM "{self.schema}".dead_letter '
                      "WHERE resolved_at IS NULL")
        self.calls = 0

    def round(self) -> int:
        n = 0
        for i, group in enumerate(self._groups()):
            n += self._read(i, len(group))
        return n

    def _read(self, i: int, shards: int) -> int:
        slot = f"sv2_logical_{i}"
        res = self._c.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, 'proto_version', '1', "
            "'publication_names', %s, 'binary', 'true')", (slot, self.batch * shards, slot)).fetchall()
        self.calls += 1
        if not res:
            return 0
        held = self._c.execute(self._held).fetchall()
        if held:
            raise AssertionError("the bench writes no dead letters: a held key here is a bug")
        reader = self._readers[i]
        per_shard: dict[int, list[Row]] = defaultdict(list)
        end = 0
        for (data,) in res:
            txn = reader.feed(bytes(data))
            if txn is None:
                continue
            end = txn.end_lsn
            for r in txn.inserts:
                key = r["key"]
                per_shard[int(r["shard"])].append(Row(int(r["id"]), int(r["shard"]), key, r["key_seq"]))
        n = 0
        with self._c.pipeline():
            for shard, rows in sorted(per_shard.items()):
                for lo in range(0, len(rows), self.batch):
                    chunk = rows[lo:lo + self.batch]
                    p, first = self.sink.commit(shard, chunk, {"commit_lsn": _lsn(end)})
                    self._c.execute(self._progress.sql, self._progress.params(shard, chunk, p, first, _lsn(end)))
                    n += len(chunk)
        if end:
            self._c.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, _lsn(end)))
        return n

    def retained_bytes(self) -> int:
        """WAL the slots keep and every peek re-reads: from the oldest restart_lsn to the insert position."""
        row = self._c.execute("SELECT coalesce(max(pg_current_wal_insert_lsn() - restart_lsn), 0) "
                              "FROM pg_replication_slots WHERE slot_name LIKE 'sv2_logical%'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._c.close()

    def extra(self) -> dict[str, Any]:
        return {"peek_calls": self.calls, "slots": self.slots}
