"""Permanent Kafka errors against the real broker: the affected row is dead-lettered with the reason after bounded
attempts, and a healthy row of another key in the same shard publishes meanwhile (read_committed reader).

The shared test broker runs with ``auto.create.topics.enable=false`` (stack/kafka.py), as production clusters
should. The ACL case starts its own broker with a SASL listener and an authorizer (stack/security.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stack.kafka import KafkaCluster
from stack.process import free_port, wait_for
from stack.security import ScramUser, SecureKafka, make_tls, secure_props
from tests.conftest import create_topic
from tests.integration.relay.real_worker import (
    dead_letter_reason,
    in_kafka,
    insert_row,
    published,
    real_shard,
)

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class Written:
    url: str
    bad: int  # key "bad"
    healthy: int  # key "good", same shard, after it
    healthy_event: str
    later: int  # key "bad" again

    def settled(self) -> bool:
        return dead_letter_reason(self.url, self.bad) is not None and published(self.url, self.healthy)

    def check(self, bootstrap: str, topic: str, says: str) -> None:
        reason = dead_letter_reason(self.url, self.bad)
        assert reason is not None and says in reason, reason
        assert self.healthy_event in in_kafka(bootstrap, topic), "the healthy row of the same shard was published"
        assert not published(self.url, self.later) and dead_letter_reason(self.url, self.later) is None, \
            "the bad key's later row waits behind its dead letter"


def _bad_then_healthy(url: str, bad_topic: str, good_topic: str, *, payload: bytes = b'{"ok":1}',
                      bypass_checks: bool = False) -> Written:
    """A bad row, a healthy row of another key in the same shard, then a later row of the bad key."""
    bad, _ = insert_row(url, topic=bad_topic, key=b"bad", payload=payload, bypass_checks=bypass_checks)
    healthy, eid = insert_row(url, topic=good_topic, key=b"good")
    later, _ = insert_row(url, topic=bad_topic, key=b"bad", bypass_checks=bypass_checks)
    return Written(url, bad, healthy, eid, later)


def test_topic_that_does_not_exist_is_dead_lettered_and_the_shard_flows(fresh_db: str, bootstrap: str,
                                                                       topic: str) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    w = _bad_then_healthy(fresh_db, missing, topic)
    shard = real_shard(fresh_db, bootstrap)
    try:
        shard.run_until(w.settled, 30, "the missing topic's row dead-lettered")
    finally:
        shard.close()
    w.check(bootstrap, topic, f"topic {missing!r} does not exist")


def test_topic_created_before_the_attempts_run_out_is_published(fresh_db: str, bootstrap: str) -> None:
    late = f"late-{uuid.uuid4().hex[:8]}"
    row, eid = insert_row(fresh_db, topic=late, key=b"k")
    shard = real_shard(fresh_db, bootstrap, max_attempts=100, retry_max_s=0.5)
    try:
        shard.worker.run_once()  # refused: the topic is missing (one attempt counted)
        assert not published(fresh_db, row) and dead_letter_reason(fresh_db, row) is None
        create_topic(bootstrap, late, partitions=1)
        shard.run_until(lambda: published(fresh_db, row), 30, "the row published once its topic exists")
    finally:
        shard.close()
    assert eid in in_kafka(bootstrap, late)


def test_transaction_refused_at_add_partitions_is_isolated_by_topic(fresh_db: str, bootstrap: str,
                                                                    topic: str) -> None:
    # Kafka refuses any client write to its internal topics with TOPIC_AUTHORIZATION_FAILED when the partition is
    # added to the transaction: the error belongs to the transaction, not to a record.
    w = _bad_then_healthy(fresh_db, "__transaction_state", topic)
    shard = real_shard(fresh_db, bootstrap)
    try:
        shard.run_until(w.settled, 60, "the internal topic's row dead-lettered")
    finally:
        shard.close()
    w.check(bootstrap, topic, "TOPIC_AUTHORIZATION_FAILED")


def test_invalid_topic_name_is_dead_lettered_at_once(fresh_db: str, bootstrap: str, topic: str) -> None:
    w = _bad_then_healthy(fresh_db, "bad name!", topic, bypass_checks=True)
    shard = real_shard(fresh_db, bootstrap, max_attempts=100)  # no attempts to wait out: the row itself is wrong
    try:
        shard.run_until(w.settled, 30, "the invalid name's row dead-lettered")
    finally:
        shard.close()
    w.check(bootstrap, topic, "characters Kafka rejects")


def test_oversize_records_are_dead_lettered_and_the_shard_flows(fresh_db: str, bootstrap: str, topic: str) -> None:
    # Refused by the broker (the topic's max.message.bytes): the record batch is refused, its transaction aborted.
    small = f"small-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, small, partitions=1, config={"max.message.bytes": "2000"})
    w = _bad_then_healthy(fresh_db, small, topic, payload=os.urandom(5000))  # incompressible: lz4 is on
    # Refused by the client (above the producer's message.max.bytes) before it is sent.
    huge, _ = insert_row(fresh_db, topic=topic, key=b"huge", payload=os.urandom(3_000_000))
    shard = real_shard(fresh_db, bootstrap)
    try:
        shard.run_until(lambda: w.settled() and dead_letter_reason(fresh_db, huge) is not None,
                        60, "both oversize rows dead-lettered")
    finally:
        shard.close()
    w.check(bootstrap, topic, "MSG_SIZE_TOO_LARGE")
    assert "MSG_SIZE_TOO_LARGE" in (dead_letter_reason(fresh_db, huge) or "")


# --- a principal denied WRITE on one topic, by a real authorizer ----------------------------------------------
RELAY_USER = ScramUser("outbox-relay")


@pytest.fixture(scope="module")
def authorizing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A 1-node cluster with a SASL_SSL listener and the standard authorizer: everything is allowed unless an ACL
    says otherwise; the PLAINTEXT listener (ANONYMOUS) is a super user for the test's own admin and checks."""
    home: Path = tmp_path_factory.mktemp("authz-kafka")
    tls = make_tls(home / "tls")
    cluster = KafkaCluster(1, home=home / "kafka")
    node = cluster.node(1)
    sasl_port = free_port()
    cluster.extra_props = {
        **secure_props(sasl_port, node.broker_port, node.controller_port, tls),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "true",
        "super.users": "User:ANONYMOUS",
    }
    cluster.format_args = ["--add-scram", RELAY_USER.format_arg()]
    cluster.start(180)
    secure = SecureKafka(cluster, sasl_port, tls, (RELAY_USER,))
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**secure.client_config(), "log_level": 0})
        wait_for(lambda: bool(admin.list_topics(timeout=3).brokers), 120, "a SASL_SSL login", interval=0.5)
        yield secure
    finally:
        cluster.stop()


def test_topic_the_principal_may_not_write_is_dead_lettered_and_the_shard_flows(authorizing: SecureKafka,
                                                                               fresh_db: str) -> None:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    plain = authorizing.cluster.bootstrap
    denied, allowed = f"denied-{uuid.uuid4().hex[:6]}", f"allowed-{uuid.uuid4().hex[:6]}"
    for t in (denied, allowed):
        create_topic(plain, t, partitions=1)
    admin = AdminClient({"bootstrap.servers": plain})
    acl = AclBinding(ResourceType.TOPIC, denied, ResourcePatternType.LITERAL, f"User:{RELAY_USER.name}", "*",
                     AclOperation.WRITE, AclPermissionType.DENY)
    for f in admin.create_acls([acl]).values():
        f.result(30)
    w = _bad_then_healthy(fresh_db, denied, allowed)
    sec = authorizing.client_config(RELAY_USER)
    shard = real_shard(fresh_db, authorizing.sasl_bootstrap, checkpoint_replication=1,
                       kafka_config={k: v for k, v in sec.items() if k != "bootstrap.servers"})
    try:
        shard.run_until(w.settled, 60, "the denied topic's row dead-lettered")
    finally:
        shard.close()
    w.check(plain, allowed, "TOPIC_AUTHORIZATION_FAILED")
