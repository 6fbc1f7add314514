"""The Kafka side of the prototypes, as a no-op: where each row would land, and the checkpoint it would carry.

The storage measurements need no broker. Each "transaction" gives its rows consecutive offsets on the shard's
partition (shard ↔ partition affinity, docs/decisions/016: one data partition per shard transaction) and builds
the checkpoint record the design would produce inside the Kafka transaction, so its size is reported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    """What the bench checks about one relayed row: order per key, exactly once."""

    id: int
    shard: int
    key: bytes | None
    key_seq: int | None


@dataclass
class Sink:
    partitions: int = 8
    offsets: dict[int, int] = field(default_factory=dict)
    transactions: int = 0
    checkpoint_bytes: int = 0
    log: list[Row] = field(default_factory=list)  # every row "committed", in commit order
    track: bool = False  # record when each row was committed (the long-writer scenario's latencies)
    committed_at: dict[int, float] = field(default_factory=dict)

    def commit(self, shard: int, rows: Sequence[Row], position: dict[str, Any]) -> tuple[int, int]:
        """One Kafka transaction of ``rows`` (in order) with the design's ``position`` in its checkpoint;
        returns (partition, first offset): the rows sit at consecutive offsets."""
        p = shard % self.partitions
        first = self.offsets.get(p, 0)
        self.offsets[p] = first + len(rows) + 1  # + the commit marker
        # As relay/checkpoint.py encodes it (identity fields elided): the position plus [id, partition, offset]
        # of each row, which recovery writes to the database if the progress row of this batch is missing.
        doc = {"v": 3, "shard": shard, "epoch": 1, "owner": "bench", "position": position,
               "rows": [[r.id, p, first + i] for i, r in enumerate(rows)]}
        self.checkpoint_bytes += len(json.dumps(doc, separators=(",", ":")))
        self.transactions += 1
        self.log.extend(rows)
        if self.track:
            now = time.monotonic()
            self.committed_at.update((r.id, now) for r in rows)
        return p, first


def check(log: Sequence[Row], expected: int) -> dict[str, int]:
    """Exactly once and per-key order of a sink's log: duplicates, missing rows, and key_seq regressions or gaps
    (each key's sequence numbers must come 1, 2, 3, ... in commit order; the bench's keys start at 1)."""
    ids = [r.id for r in log]
    dupes = len(ids) - len(set(ids))
    last: dict[bytes, int] = {}
    disorder = 0
    for r in log:
        if r.key is None or r.key_seq is None:
            continue
        if r.key_seq != last.get(r.key, 0) + 1:
            disorder += 1
        last[r.key] = r.key_seq
    return {"relayed": len(ids), "duplicates": dupes, "missing": max(0, expected - len(set(ids))),
            "order_violations": disorder}
