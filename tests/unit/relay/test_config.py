"""Relay settings: defaults, overrides, passthrough, and bad values named by their variable."""

from __future__ import annotations

from pathlib import Path

import pytest

import relay
from outbox.errors import ConfigError
from relay import checkpoint, config, config_values
from relay.config import RelaySettings, StatusSettings
from relay.kafka import client_config, producer_config
from relay.logs import redact

BASE = {"OUTBOX_DATABASE_URL": "postgresql://u:pw@h/db", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}


def load(**env: str) -> RelaySettings:
    return RelaySettings.load(environ={**BASE, **env})


def test_defaults_and_driver_normalisation() -> None:
    s = load()
    assert s.shards == 8 and s.lease_ttl_s == 2.5 and s.heartbeat_s == 0.5
    assert s.sqlalchemy_url == "postgresql+psycopg://u:pw@h/db"
    with pytest.raises(RuntimeError, match="identity is not resolved"):
        s.transactional_id(5)  # the default prefix comes from the outbox identity, read from the database
    assert s.model_copy(update={"outbox_id": "abc"}).transactional_id(5) == "outbox-relay-abc-5"
    assert load(OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX="p").transactional_id(5, 1) == "p-5.1"


def test_producer_config_is_exactly_once_and_java_compatible() -> None:
    s = load(OUTBOX_KAFKA_SECURITY_PROTOCOL="SASL_SSL", OUTBOX_KAFKA_LINGER_MS="50").model_copy(
        update={"outbox_id": "abc"})
    cfg = producer_config(s, 2)
    assert cfg["enable.idempotence"] is True and cfg["acks"] == "all"
    assert cfg["transactional.id"] == "outbox-relay-abc-2" and cfg["partitioner"] == "murmur2_random"
    assert cfg["security.protocol"] == "SASL_SSL" and cfg["linger.ms"] == "50"
    assert cfg["message.timeout.ms"] <= cfg["transaction.timeout.ms"]
    assert client_config(s)["security.protocol"] == "SASL_SSL" and "linger.ms" not in client_config(s)


def test_flags_override_env_and_kafka_config_flag_passes_through() -> None:
    s = RelaySettings.load({"batch_size": 17}, {"sasl.mechanism": "SCRAM-SHA-512"},
                           environ={**BASE, "OUTBOX_RELAY_BATCH_SIZE": "5"})
    assert s.batch_size == 17 and s.kafka_extra == {"sasl.mechanism": "SCRAM-SHA-512"}


@pytest.mark.parametrize(("env", "named"), [
    ({"OUTBOX_RELAY_BATCH_SIZE": "0"}, "OUTBOX_RELAY_BATCH_SIZE"),
    ({"OUTBOX_SHARDS": "many"}, "OUTBOX_SHARDS"),
    ({"OUTBOX_RELAY_HEARTBEAT_S": "2"}, "OUTBOX_RELAY_HEARTBEAT_S"),
    ({"OUTBOX_KAFKA_ENABLE_IDEMPOTENCE": "false"}, "enable.idempotence"),
    ({"OUTBOX_DATABASE_URL": "mysql://x/y"}, "OUTBOX_DATABASE_URL"),
    ({"OUTBOX_RELAY_COMPRESSION": "brotli"}, "OUTBOX_RELAY_COMPRESSION"),
])
def test_bad_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load(**env)


def test_missing_required_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS: is required"):
        RelaySettings.load(environ={"OUTBOX_DATABASE_URL": "postgresql://h/d"})


TEST_SWITCHES = {"OUTBOX_RELAY_TEST_BROKEN": "mark_before_commit", "OUTBOX_RELAY_TEST_KILL_AT": "mid_produce",
                 "OUTBOX_RELAY_TEST_KILL_BATCH": "1", "OUTBOX_RELAY_TEST_KILL_SIGNAL": "STOP"}


def test_the_shipped_relay_has_no_test_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fault suite's kill points and deliberately broken protocol are injected from outside the wheel
    # (chaos/faulty_relay.py, through relay/hooks.py); the variables that used to switch them on are ignored.
    assert not [f for f in RelaySettings.model_fields if "test" in f or "broken" in f or "kill" in f]
    plain = load(OUTBOX_RELAY_INSTANCE_ID="i")
    assert load(OUTBOX_RELAY_INSTANCE_ID="i", **TEST_SWITCHES) == plain
    for var, value in {**BASE, "OUTBOX_RELAY_INSTANCE_ID": "i"}.items():
        monkeypatch.setenv(var, value)
    before = RelaySettings.load()
    for var, value in TEST_SWITCHES.items():
        monkeypatch.setenv(var, value)
    assert RelaySettings.load() == before  # from the real environment too
    for name in ("BrokenMode", "KillPoint", "FaultSignal"):
        assert not hasattr(config, name) and not hasattr(config_values, name), name


def test_no_shipped_module_reads_a_test_switch() -> None:
    import tomllib

    root = Path(relay.__file__).resolve().parents[1]
    shipped = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "chaos" not in shipped["packages"] and "tests" not in shipped["packages"]
    for package in shipped["packages"]:
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert "OUTBOX_RELAY_TEST_" not in text and "FAULTY_RELAY_" not in text, path
            assert "mark_before_commit" not in text.lower(), path


def test_secrets_are_redacted_in_logs() -> None:
    assert redact("postgresql+psycopg://u:hunter2@h/db") == "postgresql+psycopg://u:***@h/db"
    assert redact({"sasl.password": "x", "security.protocol": "SSL"}) == {"sasl.password": "***",
                                                                           "security.protocol": "SSL"}


def test_checkpoint_round_trip_and_refuses_unknown_versions() -> None:
    from outbox.store.relay import Mark
    from relay.identity import OutboxIdentity

    ident = OutboxIdentity("7441", "orders", "outbox")
    v = checkpoint.encode(ident, 2, 9, "me", [Mark(1, 0, 5), Mark(2, 1, 7)])
    cp = checkpoint.decode(v)
    assert cp.marks == (Mark(1, 0, 5), Mark(2, 1, 7)) and cp.epoch == 9 and cp.outbox == ident.id
    assert "database 'orders', schema 'outbox'" in cp.origin
    legacy = checkpoint.decode(b'{"v":1,"shard":2,"epoch":3,"owner":"o","rows":[[1,0,5]]}')
    assert legacy.outbox is None and legacy.marks == (Mark(1, 0, 5),), "the previous format is still read"
    with pytest.raises(ValueError, match="unknown checkpoint"):
        checkpoint.decode(b'{"v": 99}')


@pytest.mark.parametrize("servers", [",,,", "host:notaport", "", "host", "a:0", "a:70000", "FOO://a:1", "a:1,",
                                     "a:1,,b:2", "::1:9092", "a b:1"])
def test_malformed_bootstrap_servers_are_refused(servers: str) -> None:
    # librdkafka takes all of these without a word and then never connects ("Kafka unreachable" after 15 s).
    with pytest.raises(ConfigError, match=r"KAFKA_BOOTSTRAP_SERVERS( \(--bootstrap-servers\))?: "
                       r"expected host:port\[,host:port\.\.\.\]"):
        load(KAFKA_BOOTSTRAP_SERVERS=servers)


@pytest.mark.parametrize("servers", ["127.0.0.1:9092", "kafka-1:9092,kafka-2.example.com:9093", " k1:1 , k2:2 ",
                                     "[::1]:9092", "[fe80::1%eth0]:9092,10.0.0.1:65535", "SSL://k:9093",
                                     "sasl_ssl://k:9094,PLAINTEXT://[::1]:9092"])
def test_bootstrap_servers_kafka_accepts_are_accepted(servers: str) -> None:
    assert load(KAFKA_BOOTSTRAP_SERVERS=servers).bootstrap_servers == servers


def test_checkpoint_replication_0_and_dot_topic_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"OUTBOX_RELAY_CHECKPOINT_REPLICATION: must be -1 .* or at least 1"):
        load(OUTBOX_RELAY_CHECKPOINT_REPLICATION="0")
    assert load(OUTBOX_RELAY_CHECKPOINT_REPLICATION="-1").checkpoint_replication == -1
    assert load(OUTBOX_RELAY_CHECKPOINT_REPLICATION="3").checkpoint_replication == 3
    for name in (".", ".."):
        with pytest.raises(ConfigError, match=r"OUTBOX_RELAY_CHECKPOINT_TOPIC \(--checkpoint-topic\): "
                                              r"may not be '\.' or '\.\.'"):
            load(OUTBOX_RELAY_CHECKPOINT_TOPIC=name)
    assert load(OUTBOX_RELAY_CHECKPOINT_TOPIC="...").checkpoint_topic == "..."  # Kafka accepts this one


def test_schema_names_longer_than_postgres_keeps_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load(OUTBOX_SCHEMA="s" * 63).db_schema == "s" * 63
    with pytest.raises(ConfigError, match=r"OUTBOX_SCHEMA( \(--schema\))?: must be at most 63 characters"):
        load(OUTBOX_SCHEMA="s" * 64)
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://h/d")
    with pytest.raises(ConfigError, match=r"bad status configuration: OUTBOX_SCHEMA \(--schema\): must be at most "
                                          r"63 characters"):
        StatusSettings.load({"db_schema": "s" * 64})
    assert StatusSettings.load({"db_schema": "s" * 63}).db_schema == "s" * 63
