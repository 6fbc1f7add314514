"""librdkafka settings it refuses are configuration errors at start (no broker needed), naming the setting and
never its secret value. (The rate limit on repeated librdkafka lines: tests/unit/ops/test_logs.py.)"""

from __future__ import annotations

import pytest

from outbox.errors import ConfigError
from relay import startup
from relay.config import RelaySettings
from relay.kafka import validate_config

BASE = {"OUTBOX_DATABASE_URL": "postgresql://u:pw@h/db", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}
SECRET = "hunter2-Xq9"


def settings(extra: dict[str, str] | None = None, **env: str) -> RelaySettings:
    return RelaySettings.load(kafka_config=extra, environ={**BASE, **env})


def refused(s: RelaySettings) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(s)
    return str(exc.value)


@pytest.mark.parametrize(("extra", "named"), [
    # Producer-only settings: the admin client never sees them, so they used to fail in every shard worker forever.
    ({"linger.ms": "abc"}, "--kafka-config/OUTBOX_KAFKA_LINGER_MS linger.ms=abc: "),
    ({"message.max.bytes": "-5"}, "--kafka-config/OUTBOX_KAFKA_MESSAGE_MAX_BYTES message.max.bytes=-5: "),
    # These used to be a KafkaException traceback and exit 1.
    ({"not.a.setting": "1"}, "--kafka-config/OUTBOX_KAFKA_NOT_A_SETTING not.a.setting=1: "),
    ({"security.protocol": "bogus"}, "--kafka-config/OUTBOX_KAFKA_SECURITY_PROTOCOL security.protocol=bogus: "),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "BOGUS"},
     "--kafka-config/OUTBOX_KAFKA_SASL_MECHANISM sasl.mechanism=BOGUS: "),
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
     "--kafka-config/OUTBOX_KAFKA_SSL_CA_LOCATION ssl.ca.location=/nonexistent/ca.pem: "),
])
def test_settings_librdkafka_refuses_are_configuration_errors_naming_them(extra: dict[str, str], named: str) -> None:
    assert named in refused(settings(extra))


def test_environment_passthrough_is_checked_too() -> None:
    text = refused(settings(OUTBOX_KAFKA_LINGER_MS="abc"))
    assert "OUTBOX_KAFKA_LINGER_MS linger.ms=abc: Invalid value" in text, text


def test_good_settings_pass() -> None:
    validate_config(settings())
    validate_config(settings({"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
                              "sasl.username": "u", "sasl.password": SECRET, "linger.ms": "5"}))


def test_secret_values_never_appear_in_the_message() -> None:
    # No username: refused at construction, in words that name sasl.password.
    text = refused(settings({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.password": SECRET}))
    assert "OUTBOX_KAFKA_SASL_PASSWORD sasl.password (value hidden): " in text and SECRET not in text, text
    text = refused(settings({"security.protocol": "SSL", "ssl.key.location": "/nonexistent/key.pem",
                             "ssl.key.password": SECRET}))
    assert "ssl.key.location=/nonexistent/key.pem" in text and SECRET not in text, text


@pytest.mark.parametrize("secret", [SECRET, "ab"])
def test_a_reason_quoting_a_secret_value_is_masked(secret: str) -> None:
    # librdkafka quotes refused values ('Invalid value "bogus" for ...'): a secret one must not come through.
    err = startup.kafka_config_error({"sasl.password": secret, "linger.ms": "5"},
                                     f'Invalid value "{secret}" for configuration property "sasl.password"',
                                     lambda k, v: k == "sasl.password")
    assert f'"{secret}"' not in str(err) and "sasl.password (value hidden)" in str(err), err


def test_a_refused_combination_without_a_named_key_names_the_passthrough() -> None:
    err = startup.kafka_config_error({"a.b": "1", "c.d": "2"}, "Failed to create producer: nope",
                                     lambda k, v: False)
    assert str(err).startswith("--kafka-config/OUTBOX_KAFKA_*: Failed to create producer: nope"), err


def test_the_producer_allows_the_records_writers_accept() -> None:
    from outbox.config import DEFAULT_MAX_RECORD_BYTES
    from relay.kafka.clients import producer_config

    # librdkafka's own default (1,000,000) would refuse at produce() a record enqueue accepted
    named = {"OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": "t"}  # no database here to derive the default from
    assert producer_config(settings(**named), 0)["message.max.bytes"] == DEFAULT_MAX_RECORD_BYTES
    # the user's passthrough still wins (docs/write-side.md: keep OUTBOX_MAX_PAYLOAD_BYTES at or under it)
    raised = settings(OUTBOX_KAFKA_MESSAGE_MAX_BYTES="2097152", **named)
    assert producer_config(raised, 0)["message.max.bytes"] == "2097152"
