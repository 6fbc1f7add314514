"""The checkpoint record: what one shard's last committed Kafka transaction contained, and whose it is.

It is produced inside the same transaction as the events, so it is visible to read_committed readers exactly
when they are. Key = the shard's transactional id (``<prefix>-<shard>``), value = compact JSON::

    {"v": 2, "outbox": "3f9c0a1b2c4d", "sysid": "7441...", "db": "orders", "schema": "outbox",
     "shard": 3, "epoch": 17, "owner": "host-123-ab12cd", "rows": [[id, partition, offset], ...]}

Only a shard's last batch can be in doubt (a batch is marked in the database before the next one is claimed),
so the last checkpoint is all recovery needs. Row ids mean something only in the database that wrote them: the
``outbox`` identity (relay/identity.py) says which one, and recovery refuses a record of another outbox.

Version 1 (before identities) was keyed by the bare shard number and carried no identity; recovery still reads
it once, to upgrade without re-sending, and only after checking its rows against Kafka (relay/worker.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from outbox.store.relay import Mark
from relay.identity import OutboxIdentity

VERSION = 2
LEGACY_VERSION = 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    shard: int
    epoch: int
    owner: str
    marks: tuple[Mark, ...]
    outbox: str | None = None  # the writer's outbox id; None in a version-1 record
    origin: str = "unknown"  # where that outbox lives, for messages


@dataclass(frozen=True, slots=True)
class Writer:
    """Who writes a shard's checkpoints: the outbox, the shard's (first) transactional id, the instance."""

    outbox: OutboxIdentity
    transactional_id: str
    owner: str

    @property
    def key(self) -> bytes:
        return key_for(self.transactional_id)

    @property
    def opening_key(self) -> bytes:
        return opening_key_for(self.transactional_id)

    def record(self, shard: int, epoch: int, marks: Sequence[Mark]) -> bytes:
        return encode(self.outbox, shard, epoch, self.owner, marks)


def key_for(transactional_id: str) -> bytes:
    """A shard's checkpoint key: its (first) transactional id, unique to one outbox like the id itself."""
    return transactional_id.encode()


def legacy_key_for(shard: int) -> bytes:
    """The key version-1 checkpoints used: the bare shard number, shared by every outbox on the topic."""
    return str(shard).encode()


def opening_key_for(transactional_id: str) -> bytes:
    """Key of the small record each transaction starts with on the checkpoint partition.

    Producing it first makes librdkafka add the checkpoint partition to the transaction together with the
    event partitions (one AddPartitionsToTxn, one transaction-log write), instead of in a separate round trip
    after the flush. Recovery reads only the exact key :func:`key_for`, so it never mistakes one for a checkpoint.
    """
    return f"{transactional_id}.open".encode()


def opening(shard: int, epoch: int) -> bytes:
    return json.dumps({"v": VERSION, "open": True, "shard": shard, "epoch": epoch}, separators=(",", ":")).encode()


def probe(shard: int, epoch: int) -> bytes:
    """Value of the record that recovery produces and aborts to learn where the partition ends."""
    return json.dumps({"v": VERSION, "probe": True, "shard": shard, "epoch": epoch}, separators=(",", ":")).encode()


def encode(outbox: OutboxIdentity, shard: int, epoch: int, owner: str, marks: Sequence[Mark]) -> bytes:
    rows = [[m.id, m.partition, m.offset] for m in marks]
    doc = {"v": VERSION, "outbox": outbox.id, "sysid": outbox.system_identifier, "db": outbox.database,
           "schema": outbox.schema, "shard": shard, "epoch": epoch, "owner": owner, "rows": rows}
    return json.dumps(doc, separators=(",", ":")).encode()


def decode(value: bytes) -> Checkpoint:
    """Parse a checkpoint value (this version or version 1); raises ValueError on anything else."""
    doc = json.loads(value)
    if not isinstance(doc, dict) or doc.get("v") not in (VERSION, LEGACY_VERSION):
        raise ValueError(f"unknown checkpoint format {str(doc)[:80]!r}")
    marks = tuple(Mark(int(i), int(p), int(o)) for i, p, o in doc["rows"])
    if doc["v"] == LEGACY_VERSION:
        return Checkpoint(int(doc["shard"]), int(doc["epoch"]), str(doc["owner"]), marks)
    origin = f"{doc['outbox']} (system identifier {doc['sysid']}, database {doc['db']!r}, schema {doc['schema']!r})"
    return Checkpoint(int(doc["shard"]), int(doc["epoch"]), str(doc["owner"]), marks, str(doc["outbox"]), origin)
