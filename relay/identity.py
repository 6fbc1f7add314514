"""Which outbox this relay publishes: a stable identity, and the Kafka names derived from it.

Several services share one Kafka cluster, each with its own outbox database. Kafka-side state, the producers'
``transactional.id`` and the checkpoint records, must never be shared between two outboxes: a relay that took
another outbox's checkpoint as its own marked its rows published without sending them. So every outbox has an
identity, ``(Postgres system identifier, database, schema)``, and:

* the default ``OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX`` is ``outbox-relay-<id>``, so two outboxes on one cluster
  never collide with default settings (and ACLs on the prefix ``outbox-relay`` still cover it);
* every checkpoint record carries the identity, and recovery refuses a record of another outbox
  (:class:`outbox.errors.OutboxCollisionError`) instead of acting on it.

The system identifier is fixed when a Postgres cluster is initialised and kept by physical replicas, so a
promoted standby is the same outbox. A logical copy (dump and restore) is a new cluster: pin
``OUTBOX_RELAY_OUTBOX_ID`` to the old identity when moving an outbox that way (docs/operations.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from outbox.errors import ConfigError, DatabaseUnavailableError, StoreError
from outbox.store.relay import RelayStore
from relay.config import RelaySettings

# The hash's length: 12 hex digits (48 bits) make an accidental collision between the outboxes of one cluster
# negligible while keeping transactional ids short (Kafka logs them on every transaction).
_DIGITS = 12


@dataclass(frozen=True, slots=True)
class OutboxIdentity:
    """Where an outbox lives; ``id`` names it in Kafka (transactional ids, checkpoint records)."""

    system_identifier: str
    database: str
    schema: str
    pinned: str | None = None  # OUTBOX_RELAY_OUTBOX_ID, when set

    @property
    def id(self) -> str:
        if self.pinned:
            return self.pinned
        text = f"{self.system_identifier}/{self.database}/{self.schema}".encode()
        return hashlib.sha256(text).hexdigest()[:_DIGITS]

    def describe(self) -> str:
        return f"{self.id} (system identifier {self.system_identifier}, database {self.database!r}, " \
               f"schema {self.schema!r})"


def read(settings: RelaySettings, store: RelayStore) -> OutboxIdentity:
    """The identity of the outbox ``store`` reads (one query). Raises DatabaseUnavailableError while the
    database is down, and ConfigError where the server will not tell its system identifier (some managed
    services) and no identity is pinned."""
    try:
        sysid, database = store.cluster_identity()
    except DatabaseUnavailableError:
        raise
    except StoreError as exc:
        if settings.outbox_id is None:
            raise ConfigError(
                f"cannot read this database's identity ({exc}): set OUTBOX_RELAY_OUTBOX_ID to a name unique to this "
                "outbox among all outboxes sharing the Kafka cluster (the same on all its relays)") from exc
        sysid, database = "unknown", "unknown"
    return OutboxIdentity(sysid, database, settings.db_schema, settings.outbox_id)


def resolve(settings: RelaySettings, store: RelayStore) -> RelaySettings:
    """``settings`` with the outbox identity filled in (and so the default transactional-id prefix derived from
    it). Call once the database answers, before anything touches Kafka; raises DatabaseUnavailableError while it
    does not."""
    resolved = settings.model_copy(update={"outbox_id": read(settings, store).id})
    return resolved.model_copy(update={"transactional_id_prefix": resolved.id_prefix})
