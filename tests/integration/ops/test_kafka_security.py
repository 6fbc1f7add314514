"""Kafka SASL_SSL (SCRAM-SHA-512 over TLS) against a REAL listener: clients, the relay, and wrong credentials."""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stack.security import ScramUser, SecureKafka, start_secure_kafka
from tests.integration.relay.harness import RelayProcess, write_events

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    s = start_secure_kafka(tmp_path_factory.mktemp("secure-kafka"), (ScramUser("outbox-relay"), ScramUser("reader")))
    yield s
    s.stop()


def _topic(s: SecureKafka, partitions: int = 1) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"sec-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(s.client_config())  # held: a collected client cancels its futures
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _read_committed(s: SecureKafka, topic: str, n: int, user: ScramUser, timeout: float = 60) -> list[Any]:
    from confluent_kafka import Consumer

    c = Consumer({**s.client_config(user), "group.id": f"g-{uuid.uuid4().hex[:6]}", "log_level": 3,
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


def _errors(conf: dict[str, str], timeout: float = 30) -> list[Any]:
    """The errors a client reports (error_cb) in its first attempts to connect."""
    from confluent_kafka import Producer

    errors: list[Any] = []
    p = Producer({**conf, "log_level": 0, "error_cb": errors.append})
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    p.poll(0.5)
    assert errors, "expected the client to report an error"
    return errors


def test_transactional_producer_and_read_committed_consumer_over_sasl_ssl(secure: SecureKafka) -> None:
    from confluent_kafka import Producer

    topic = _topic(secure)
    p = Producer({**secure.client_config(), "transactional.id": f"sec-{uuid.uuid4().hex[:6]}", "log_level": 3})
    p.init_transactions(60)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"k", value=f"ok-{i}".encode())
    p.commit_transaction(60)
    p.begin_transaction()
    p.produce(topic, key=b"k", value=b"aborted")
    p.flush(30)
    p.abort_transaction(30)
    got = _read_committed(secure, topic, 3, secure.users[1])
    assert [m.value() for m in got] == [b"ok-0", b"ok-1", b"ok-2"]


def test_wrong_password_is_refused_with_a_clear_error(secure: SecureKafka) -> None:
    err = _errors(secure.client_config(password="not-the-password"))[0]
    assert err.name() == "_AUTHENTICATION"
    assert "Authentication failed" in err.str() and "SCRAM-SHA-512" in err.str()
    assert "not-the-password" not in err.str()


def test_unknown_ca_and_plaintext_clients_are_refused(secure: SecureKafka, tmp_path: Path) -> None:
    from stack.security import make_tls

    other_ca = make_tls(tmp_path / "other").ca_pem
    errs = _errors({**secure.client_config(), "ssl.ca.location": str(other_ca)})
    assert any("certificate verify failed" in e.str() for e in errs), [e.str() for e in errs]
    plain = {"bootstrap.servers": secure.sasl_bootstrap, "socket.timeout.ms": "5000"}
    assert {e.name() for e in _errors(plain)} & {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_SSL"}


def test_relay_publishes_over_sasl_ssl_and_never_shows_the_password(secure: SecureKafka, fresh_db: str,
                                                                      tmp_path: Path) -> None:
    user = secure.users[0]
    topic = _topic(secure, partitions=3)
    tag = uuid.uuid4().hex[:6]
    sec = secure.client_config(user)
    env = {
        "OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": secure.sasl_bootstrap,
        "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": f"sec-{tag}", "OUTBOX_RELAY_CHECKPOINT_TOPIC": f"ckpt-{tag}",
        "OUTBOX_RELAY_CHECKPOINT_REPLICATION": "1", "OUTBOX_RELAY_LOG_LEVEL": "DEBUG",
        "OUTBOX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OUTBOX_KAFKA_SASL_MECHANISM": sec["sasl.mechanism"],
        "OUTBOX_KAFKA_SASL_USERNAME": user.name, "OUTBOX_KAFKA_SASL_PASSWORD": user.password,
        "OUTBOX_KAFKA_SSL_CA_LOCATION": sec["ssl.ca.location"],
    }
    write_events(fresh_db, topic, 20, keys=4)
    relay = RelayProcess(env, tmp_path, "sec-relay").start()
    try:
        got = _read_committed(secure, topic, 20, secure.users[1], timeout=90)
        assert len(got) == 20, relay.logs()
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{relay.port}/metrics", timeout=10).read().decode()
        assert "outbox_relay_published" in metrics
    finally:
        relay.stop()
    logs = relay.log.read_text()
    assert "relay started" in logs
    for text in (logs, metrics):
        assert user.password not in text
    assert secure.tls.keystore_password not in logs

    # Wrong password: a configuration error (exit 3, not waited for), said without echoing the password.
    bad = RelayProcess({**env, "OUTBOX_KAFKA_SASL_PASSWORD": "wrong-Pa55word-42"}, tmp_path, "bad-relay").start()
    code = bad.wait(120)
    out = bad.log.read_text()
    assert code == 3 and "refused the relay's credentials" in out, out
    assert "wrong-Pa55word-42" not in out and "Kafka" in out
