"""The value types of the relay's settings and the checks behind them: enums and validated string/int types.

They sit apart from :mod:`relay.config`, which keeps the settings classes and how they are read (it stays the
relay's one environment reader), so that modules that only switch on a value (the CLI's options) import just the
type. Nothing here reads the environment. Each check exists because the broker or Postgres would otherwise accept
the bad value silently, or refuse it late with a misleading error.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated

from pydantic import AfterValidator, Field

from outbox.config import IDENT_PATTERN, MAX_IDENT

# host:port, IPv6 in brackets, optionally behind one of the protocol prefixes librdkafka accepts (it refuses
# others, and silently ends up with no broker at all).
_BROKER = re.compile(r"(?:(?:PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)://)?"
                     r"(?:\[[0-9A-Fa-f:.]+(?:%[\w.-]+)?\]|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?):(\d{1,5})", re.I)


def _bootstrap(value: str) -> str:
    # librdkafka takes ",,," or "host:notaport" without a word and then never connects: a start-up probe that
    # times out after 15 s saying "unreachable" instead of naming the typo.
    for entry in value.split(","):
        m = _BROKER.fullmatch(entry.strip())
        if m is None or not 0 < int(m.group(1)) <= 65535:
            raise ValueError(f"expected host:port[,host:port...], and {entry.strip()!r} is not ([v6addr]:port, and "
                             "a PLAINTEXT://, SSL://, SASL_PLAINTEXT:// or SASL_SSL:// prefix, are accepted)")
    return value


def _schema_name(value: str) -> str:
    # Postgres silently truncates longer identifiers: the relay would then look for a schema that
    # `outbox migrate upgrade` (which refuses the name) never creates, and call it "behind".
    if len(value) > MAX_IDENT:
        raise ValueError(f"must be at most {MAX_IDENT} characters (Postgres' identifier limit), "
                         f"this one has {len(value)}")
    return value


def _replication(value: int) -> int:
    if value == 0:  # the broker would refuse it only at topic creation, which read as "Kafka unreachable"
        raise ValueError("must be -1 (the broker's default.replication.factor) or at least 1, not 0")
    return value


def _topic_name(value: str) -> str:
    if value in {".", ".."}:  # the pattern lets them through; the broker refuses them (as "unreachable")
        raise ValueError("may not be '.' or '..' (Kafka refuses these topic names)")
    return value


SchemaName = Annotated[str, Field(pattern=IDENT_PATTERN), AfterValidator(_schema_name)]
BootstrapServers = Annotated[str, AfterValidator(_bootstrap)]
TopicName = Annotated[str, AfterValidator(_topic_name)]
ReplicationFactor = Annotated[int, AfterValidator(_replication)]


class Compression(Enum):
    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"
    SNAPPY = "snappy"
    GZIP = "gzip"
