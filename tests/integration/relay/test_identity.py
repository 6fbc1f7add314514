"""The outbox identity against a real Postgres: derived at the first start and recorded, kept through what
changes the system identifier (pg_upgrade, a restore into a new cluster), refused where only an operator knows
(a renamed database, a copy), pinned by OUTBOX_RELAY_OUTBOX_ID; two schemas of one database are two outboxes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command

from migrations import alembic_config
from outbox.errors import ConfigError
from outbox.store.relay import RelayStore
from relay import identity
from relay.config import RelaySettings
from tests.integration.relay.harness import scalar


def _settings(url: str, **kw: str) -> RelaySettings:
    return RelaySettings.load(kw, environ={"OUTBOX_DATABASE_URL": url, "KAFKA_BOOTSTRAP_SERVERS": "unused:1"})


@pytest.fixture
def store(fresh_db: str) -> Iterator[RelayStore]:
    engine = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    yield RelayStore(engine)
    engine.dispose()


def test_the_first_start_records_the_derived_id_and_later_starts_read_it(fresh_db: str, store: RelayStore) -> None:
    assert store.recorded_identity() is None, "a database cloned from a migrated template inherits no id"
    sysid, db = store.cluster_identity()
    first = identity.resolve(_settings(fresh_db), store)
    assert first.outbox_id == identity.derived_id(sysid, db, "outbox")
    assert first.transactional_id(3) == f"outbox-relay-{first.outbox_id}-3"
    assert store.recorded_identity() == (first.outbox_id, sysid, db, "outbox")
    assert identity.resolve(_settings(fresh_db), store).outbox_id == first.outbox_id
    explicit = identity.resolve(_settings(fresh_db, transactional_id_prefix="mine"), store)
    assert explicit.transactional_id(3) == "mine-3" and explicit.outbox_id == first.outbox_id


def test_a_new_system_identifier_keeps_the_recorded_id(fresh_db: str, store: RelayStore,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    # pg_upgrade (or a restore into a new cluster) changes the system identifier: the same outbox, whose
    # transactional ids and checkpoint keys must not change (its last batch would be sent again).
    kept = identity.resolve(_settings(fresh_db), store).outbox_id
    scalar(fresh_db, "UPDATE outbox.relay_identity SET system_identifier = '42' RETURNING 1")
    with caplog.at_level(logging.WARNING, logger="relay.identity"):
        assert identity.resolve(_settings(fresh_db), store).outbox_id == kept
    assert "system identifier changed" in caplog.text
    assert store.recorded_identity()[1] == store.cluster_identity()[0]  # type: ignore[index]


def test_a_renamed_database_or_a_copy_is_refused_until_an_operator_says_which(fresh_db: str,
                                                                               store: RelayStore) -> None:
    kept = identity.resolve(_settings(fresh_db), store).outbox_id
    scalar(fresh_db, "UPDATE outbox.relay_identity SET database = 'orders' RETURNING 1")
    with pytest.raises(ConfigError, match=rf"recorded as {kept} \(database 'orders'.*"
                                          rf"OUTBOX_RELAY_OUTBOX_ID={kept} on its relays.*a copy"):
        identity.resolve(_settings(fresh_db), store)
    # The same outbox renamed: the operator pins the recorded id; later starts need no pin.
    assert identity.resolve(_settings(fresh_db, outbox_id=kept), store).outbox_id == kept
    assert identity.resolve(_settings(fresh_db), store).outbox_id == kept
    # A copy: a new id, recorded as well.
    assert identity.resolve(_settings(fresh_db, outbox_id="orders-copy"), store).outbox_id == "orders-copy"
    assert store.recorded_identity()[0] == "orders-copy"  # type: ignore[index]


def test_two_schemas_of_one_database_are_two_outboxes(fresh_db: str, store: RelayStore) -> None:
    command.upgrade(alembic_config(fresh_db, "second"), "heads")
    engine = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    try:
        a = identity.resolve(_settings(fresh_db), store)
        b = identity.resolve(_settings(fresh_db, db_schema="second"), RelayStore(engine, "second"))
    finally:
        engine.dispose()
    assert a.outbox_id != b.outbox_id and a.transactional_id(0) != b.transactional_id(0)
