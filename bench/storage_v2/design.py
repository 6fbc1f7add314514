"""What every prototype provides to the scenarios: its tables, and one relay round over all shards."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import psycopg

from bench.storage_v2.sink import Row, Sink
from bench.storage_v2.tables import progress_sql


class Design(ABC):
    """One storage protocol. ``round()`` runs one relay cycle for every shard: claim, a no-op Kafka transaction
    (the sink), and what the design records in Postgres afterwards."""

    name: str
    schema: str
    # pg_stat_statements patterns (LIKE) of the statements of each relay step, for buffers and WAL per call
    statements: dict[str, str]

    def __init__(self, dsn: str, url: str, *, shards: int, batch: int, sink: Sink) -> None:
        self.dsn, self.url, self.shards, self.batch, self.sink = dsn, url, shards, batch, sink

    @abstractmethod
    def create(self, admin: psycopg.Connection[Any]) -> None:
        """(Re)create the design's tables (and slots) from nothing; runs before any event is written."""

    @abstractmethod
    def open(self) -> None:
        """Connect the relay side (its sessions live until ``close``, so their CPU is counted while alive)."""

    @abstractmethod
    def round(self) -> int:
        """One relay cycle over every shard; returns the rows relayed (0: nothing was pending)."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    def tables(self) -> list[str]:
        """The tables the design writes (VACUUMed after a drain, to count the cleanup it leaves)."""
        return [f'"{self.schema}".event', f'"{self.schema}".relay_progress']

    def extra(self) -> dict[str, Any]:
        """Anything design-specific to report after a scenario."""
        return {}


class Progress:
    """One narrow progress row per Kafka transaction: ids in publish order, one offset run per partition."""

    def __init__(self, schema: str) -> None:
        self.sql = progress_sql(schema)
        self.seq: dict[int, int] = {}

    def params(self, shard: int, rows: Sequence[Row], partition: int, first: int,
               position: str) -> tuple[Any, ...]:
        seq = self.seq[shard] = self.seq.get(shard, 0) + 1
        ids = [r.id for r in rows]
        return (shard, seq, position, min(ids), max(ids), ids, [partition], [first], [len(ids)])


def decode_key(v: Any) -> bytes | None:
    return None if v is None else bytes(v)
