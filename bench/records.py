"""The benchmarks' records: 1 KiB payloads spread over keys, on topics of a fixed partition count."""

from __future__ import annotations

import json
import uuid

PAYLOAD_BYTES = 1024
KEYS = 1000
# A multiple of the default 8 shards, as docs/operations.md advises: each shard then writes one partition per
# transaction (docs/decisions/016). Until 2026-12-01 (evening) the benchmarks used 6.
PARTITIONS = 8


def payload(i: int) -> bytes:
    """1 KiB of JSON-ish bytes: realistic (partly compressible), different per event."""
    head = json.dumps({"order": i, "customer": f"c{i % 9973}", "status": "created", "lines": i % 7}).encode()
    body = (uuid.UUID(int=(i * 2654435761) % (1 << 128)).hex * 40).encode()
    return (head + b' "pad": "' + body)[:PAYLOAD_BYTES]


def create_topic(bootstrap: str, name: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})  # keep the handle alive until the result is in
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(60)
