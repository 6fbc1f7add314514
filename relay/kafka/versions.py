"""librdkafka's version, for the relay's ``outbox_build_info`` metric (relay/metrics.py)."""

from __future__ import annotations

import confluent_kafka


def librdkafka_version() -> str:
    """The version of the librdkafka the client runs on (bundled in the wheel, or the system's)."""
    return str(confluent_kafka.libversion()[0])
