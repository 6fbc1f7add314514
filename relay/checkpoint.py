"""The checkpoint record: what one shard's last committed Kafka transaction contained.

It is produced inside the same transaction as the events, so it is visible to read_committed readers exactly
when they are. Key = the shard number (decimal), value = compact JSON::

    {"v": 1, "shard": 3, "epoch": 17, "owner": "host-123-ab12cd", "rows": [[id, partition, offset], ...]}

Only a shard's last batch can be in doubt (a batch is marked in the database before the next one is claimed),
so the last checkpoint is all recovery needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from outbox.store.relay import Mark

VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    shard: int
    epoch: int
    owner: str
    marks: tuple[Mark, ...]


def key_for(shard: int) -> bytes:
    return str(shard).encode()


def opening_key_for(shard: int) -> bytes:
    """Key of the small record each transaction starts with on the checkpoint partition.

    Producing it first makes librdkafka add the checkpoint partition to the transaction together with the
    event partitions (one AddPartitionsToTxn, one transaction-log write), instead of in a separate round trip
    after the flush. Recovery reads only the exact key :func:`key_for`, so it never mistakes one for a checkpoint.
    """
    return f"{shard}.open".encode()


def opening(shard: int, epoch: int) -> bytes:
    return json.dumps({"v": VERSION, "open": True, "shard": shard, "epoch": epoch}, separators=(",", ":")).encode()


def probe(shard: int, epoch: int) -> bytes:
    """Value of the record that recovery produces and aborts to learn where the partition ends."""
    return json.dumps({"v": VERSION, "probe": True, "shard": shard, "epoch": epoch}, separators=(",", ":")).encode()


def encode(shard: int, epoch: int, owner: str, marks: Sequence[Mark]) -> bytes:
    rows = [[m.id, m.partition, m.offset] for m in marks]
    doc = {"v": VERSION, "shard": shard, "epoch": epoch, "owner": owner, "rows": rows}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(value: bytes) -> Checkpoint:
    """Parse a checkpoint value; raises ValueError on anything this version cannot read."""
    doc = json.loads(value)
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ValueError(f"unknown checkpoint format {str(doc)[:80]!r}")
    marks = tuple(Mark(int(i), int(p), int(o)) for i, p, o in doc["rows"])
    return Checkpoint(int(doc["shard"]), int(doc["epoch"]), str(doc["owner"]), marks)
