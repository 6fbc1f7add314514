"""Checks against Kafka: does a broker answer (at start-up, and for /readyz while running), and does librdkafka
accept our settings."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer as _Consumer
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from outbox.errors import ConfigError, KafkaUnavailableError
from relay import startup
from relay.config import RelaySettings
from relay.kafka.clients import _client_log, client_config, producer_config


def probe(settings: RelaySettings, timeout: float = 10.0) -> int:
    """Check that a broker answers; returns the number of brokers. Raises KafkaUnavailableError (start-up waits
    and tries again), or ConfigError when the broker refused our credentials (waiting would not fix them)."""
    errors: list[KafkaError] = []
    conf: dict[str, Any] = {**client_config(settings), "error_cb": errors.append}
    admin = AdminClient(conf, logger=_client_log)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        admin.poll(0.5)
        # A wrong password surfaces only through error_cb: a configuration error, said as such (exit 3).
        denied = next((e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION), None)
        if denied is not None:
            raise ConfigError(f"Kafka at {settings.bootstrap_servers} refused the relay's credentials: {denied} "
                              "(check OUTBOX_KAFKA_SASL_USERNAME, OUTBOX_KAFKA_SASL_PASSWORD and the mechanism)"
                              ) from exc
        # A TLS failure may be the broker's side (a certificate being rotated): waited for, but said plainly.
        cause = next((e.str() for e in errors if e.code() == KafkaError._SSL), exc.args[0].str())
        raise KafkaUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not answer within {timeout:.0f}s: {cause}"
        ) from exc
    return len(md.brokers)


class Reachability:
    """Whether a Kafka broker answers right now, for /readyz: one long-lived admin client asking for the
    checkpoint topic's metadata (a small request), bounded by ``timeout``."""

    def __init__(self, settings: RelaySettings, timeout: float = 5.0) -> None:
        self._topic, self._timeout = settings.checkpoint_topic, min(timeout, settings.kafka_timeout_s)
        self._admin = AdminClient(client_config(settings), logger=_client_log)

    def __call__(self) -> bool:
        try:
            self._admin.list_topics(self._topic, timeout=self._timeout)
        except KafkaException:
            return False
        finally:
            # With a logger set, librdkafka queues its lines until the client is polled: without this, an outage's
            # "connection refused" lines piled up in memory and were never logged (nor rate-limited).
            self._admin.poll(0)
        return True


# --- start-up validation (messages: relay/startup.py) ---------------------------------------------------------
# librdkafka checks its settings when a client is constructed, which needs no broker. Unchecked, a value it refuses
# surfaced as a traceback (exit 1) or, for a producer-only setting, as every shard worker failing forever.
_quiet = logging.getLogger("relay.kafka.validate")  # construction starts connecting: not worth a line here
_quiet.propagate = False
_quiet.addHandler(logging.NullHandler())


def validate_config(settings: RelaySettings) -> None:
    """Construct, once, each kind of client the relay uses with its exact settings; ConfigError if refused."""
    if settings.transactional_id_prefix is None and settings.outbox_id is None:
        # Runs before the database is asked for the outbox identity: any valid id checks the same settings.
        settings = settings.model_copy(update={"outbox_id": "config-check"})
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
