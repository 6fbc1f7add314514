"""Which outbox this relay publishes: a stable identity, and the Kafka names derived from it.

Several services share one Kafka cluster, each with its own outbox database. Kafka-side state, the producers'
``transactional.id`` and the checkpoint records, must never be shared between two outboxes: a relay that took
another outbox's checkpoint as its own marked its rows published without sending them. So every outbox has an
identity, ``(Postgres system identifier, database, schema)``, and:

* the default ``OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX`` is ``outbox-relay-<id>``, so two outboxes on one cluster
  never collide with default settings (and ACLs on the prefix ``outbox-relay`` still cover it);
* every checkpoint record carries the identity, and recovery refuses a record of another outbox
  (:class:`outbox.errors.OutboxCollisionError`) instead of acting on it.

The id is derived from that triple at the relays' first start and recorded in the outbox's schema
(``relay_identity``): the system identifier is kept by physical replicas (a promoted standby is the same
outbox) but changes with ``pg_upgrade`` or a restore into a new cluster, which must not make a new outbox
(:func:`resolve` says what it keeps and what it refuses).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from outbox.errors import ConfigError, DatabaseUnavailableError, PermissionDeniedError, StoreError
from outbox.store.relay import RelayStore
from relay.config import RelaySettings

log = logging.getLogger("relay.identity")
# The hash's length: 12 hex digits (48 bits) make an accidental collision between the outboxes of one cluster
# negligible while keeping transactional ids short (Kafka logs them on every transaction).
_DIGITS = 12


@dataclass(frozen=True, slots=True)
class OutboxIdentity:
    """Where an outbox lives; ``id`` names it in Kafka (transactional ids, checkpoint records)."""

    system_identifier: str
    database: str
    schema: str
    assigned: str | None = None  # the id in force: recorded in the database, or OUTBOX_RELAY_OUTBOX_ID

    @property
    def id(self) -> str:
        return self.assigned or derived_id(self.system_identifier, self.database, self.schema)

    def describe(self) -> str:
        return f"{self.id} (system identifier {self.system_identifier}, database {self.database!r}, " \
               f"schema {self.schema!r})"


def derived_id(system_identifier: str, database: str, schema: str) -> str:
    """The id an outbox gets at its relays' first start (then recorded, so it outlives a pg_upgrade)."""
    return hashlib.sha256(f"{system_identifier}/{database}/{schema}".encode()).hexdigest()[:_DIGITS]


def read(settings: RelaySettings, store: RelayStore) -> OutboxIdentity:
    """Where the outbox ``store`` reads lives (one query), with the id of ``settings`` if resolved. Raises
    DatabaseUnavailableError while the database is down, and ConfigError where the server will not tell its
    system identifier (some managed services) and no id is pinned."""
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
    """``settings`` with the outbox id filled in, and so the default transactional-id prefix derived from it.

    The id is recorded in the outbox's schema at the first start and read back afterwards, so that it survives
    what changes the system identifier without making another outbox: ``pg_upgrade`` and a restore into a new
    cluster keep the recorded id (with a warning). A different database or schema name (a renamed database, or a
    copy made with ``CREATE DATABASE … TEMPLATE`` or restored under another name) is refused: only an operator
    knows whether it is the same outbox (then OUTBOX_RELAY_OUTBOX_ID pins the recorded id) or a copy (a new id).
    Call once the database answers, before anything touches Kafka; raises DatabaseUnavailableError while it does
    not, ConfigError when the identity needs an operator's word."""
    live = read(settings, store)
    try:
        recorded = store.recorded_identity()
        if settings.outbox_id is not None:  # pinned: the operator's word, recorded for the next start
            if recorded != (live.id, live.system_identifier, live.database, live.schema):
                store.record_identity(live.id, live.system_identifier, live.database, live.schema, replace=True)
            outbox_id = live.id
        elif recorded is None:
            recorded = store.record_identity(live.id, live.system_identifier, live.database, live.schema)
            outbox_id = recorded[0]
        else:
            outbox_id = _keep(recorded, live, store)
    except PermissionDeniedError as exc:
        raise ConfigError(f"the relay's database role may not read or record the outbox identity ({exc.denied}): "
                          "apply `outbox roles sql` again after `outbox migrate upgrade` (docs/operations.md, "
                          '"Least-privilege roles")') from exc
    resolved = settings.model_copy(update={"outbox_id": outbox_id})
    return resolved.model_copy(update={"transactional_id_prefix": resolved.id_prefix})


def _keep(recorded: tuple[str, str, str, str], live: OutboxIdentity, store: RelayStore) -> str:
    outbox_id, sysid, database, schema = recorded
    if (database, schema) != (live.database, live.schema):
        raise ConfigError(
            f"this outbox was recorded as {outbox_id} (database {database!r}, schema {schema!r}, system "
            f"identifier {sysid}) and now reads as database {live.database!r}, schema {live.schema!r} (system "
            f"identifier {live.system_identifier}): if it is the same outbox under a new name, set "
            f"OUTBOX_RELAY_OUTBOX_ID={outbox_id} on its relays; if it is a copy that publishes on its own, set "
            "OUTBOX_RELAY_OUTBOX_ID to a new name unique on the Kafka cluster (docs/operations.md, \"Several "
            "outboxes on one Kafka cluster\")")
    if sysid != live.system_identifier:  # pg_upgrade, or a restore into a new cluster: the same outbox
        log.warning("the database's system identifier changed (pg_upgrade, or a restore into a new cluster): "
                    "keeping the recorded outbox id", extra={"outbox_id": outbox_id, "was": sysid,
                                                              "now": live.system_identifier})
        store.record_identity(outbox_id, live.system_identifier, live.database, live.schema, replace=True)
    return outbox_id
