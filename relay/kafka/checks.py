"""Start-up checks against Kafka: does a broker answer, and does librdkafka accept our settings."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from outbox.errors import KafkaUnavailableError
from relay import startup
from relay.config import RelaySettings
from relay.kafka.clients import _client_log, client_config, producer_config


def probe(settings: RelaySettings, timeout: float = 10.0) -> int:
    """Check that a broker answers; returns the number of brokers. Raises KafkaUnavailableError."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**client_config(settings), "error_cb": errors.append}
    admin = AdminClient(conf, logger=_client_log)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.5)
        # A wrong password or CA surfaces only through error_cb; say that rather than "transport failure".
        cause = next((e.str() for e in errors
                      if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL)), exc.args[0].str())
        raise KafkaUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:.0f}s: {cause}"
        ) from exc
    return len(md.brokers)


# --- start-up validation (messages: relay/startup.py) ---------------------------------------------------------
# librdkafka checks its settings when a client is constructed, which needs no broker. Unchecked, a value it refuses
# surfaced as a traceback (exit 1) or, for a producer-only setting, as every shard worker failing forever.
_quiet = logging.getLogger("relay.kafka.validate")  # construction starts connecting: not worth a line here
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


def validate_config(settings: RelaySettings) -> None:
    """Construct, once, each kind of client the relay uses with its exact settings; ConfigError if refused."""
    for make, cfg in ((Producer, producer_config(settings, 0)), (AdminClient, client_config(settings)),
                      (_Consumer, {**client_config(settings), "group.id": "outbox-relay-config-check"})):
        try:
            make(cfg, logger=_quiet)
        except KafkaException as exc:
            raise startup.kafka_config_error(settings.kafka_extra, exc.args[0].str(), _refused_alone) from exc


def _refused_alone(key: str, value: str) -> bool:
    """A bad name or value is refused even alone; a bad combination only by the client's constructor."""
    try:
        Producer({key: value}, logger=_quiet)
    except KafkaException as exc:
        return not exc.args[0].str().startswith("Failed to create")
    return False
