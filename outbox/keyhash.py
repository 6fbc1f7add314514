"""Kafka's key hash (murmur2, as the Java clients' default partitioner and librdkafka's ``murmur2_random``).

Shards use the same hash as Kafka's partitioner, so that a shard's keys fall into few partitions: an event of
shard ``s`` goes to a partition ``p`` with ``p ≡ s (mod gcd(partitions, shards))``. With a partition count that is
a multiple of ``OUTBOX_SHARDS``, each shard's Kafka transaction writes to one partition per topic instead of all
of them: fewer produce requests, partition verifications and transaction markers per batch (docs/decisions/016).
"""

from __future__ import annotations

import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF
# Pre-built unpackers for keys up to 1 KiB: building the format per call costs more than the words it reads.
_WORDS = [struct.Struct(f"<{n}I").unpack_from for n in range(256)]


def murmur2(data: bytes) -> int:
    """The unsigned 32-bit murmur2 of ``data``, bit for bit the hash of Kafka's ``Utils.murmur2``."""
    n = len(data)
    m = _M
    h = _SEED ^ n
    words = _WORDS[n >> 2](data) if n < 1024 else struct.unpack_from(f"<{n >> 2}I", data)
    for word in words:
        k = (word * m) & _MASK
        k = ((k ^ (k >> 24)) * m) & _MASK
        h = ((h * m) & _MASK) ^ k
    rest = n & 3
    if rest:  # the Java switch falls through: 3 takes bytes 2, 1 and 0; 1 only byte 0
        tail = data[n - rest:]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h = ((h ^ tail[0]) * m) & _MASK
    h = ((h ^ (h >> 13)) * m) & _MASK
    return h ^ (h >> 15)


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (``toPositive(murmur2(key)) % partitions``)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
