"""Least-privilege Postgres roles for each part of kafka-outbox, as idempotent DDL (``outbox roles sql``).

The roles are ``NOLOGIN`` group roles; grant them to your login users (``GRANT outbox_app TO orders_service``).
Re-running the script is safe (roles are created only if missing; GRANTs are idempotent), so run it again after
``outbox migrate upgrade`` adds a table. What each role may do, and why (tests/integration/ops/test_roles.py
connects as each one and proves it can do its part and nothing more):

============ ===========================================================================================
role         privileges
============ ===========================================================================================
app          INSERT into ``event`` (+ SELECT of ``id, event_id`` only, for ``INSERT ... RETURNING``);
             SELECT/INSERT/UPDATE on ``key_sequence`` (the per-key upsert). Cannot read payloads, update or
             delete events.
relay        SELECT on ``event``, UPDATE of its state columns only (published_at, partition, offset, epoch,
             attempts, last_error, dead_at); SELECT/INSERT on ``dead_letter`` (+ UPDATE to reopen one);
             SELECT/INSERT/UPDATE/DELETE on ``relay_lease`` and ``relay_instance``; SELECT on
             ``alembic_version`` (the schema check). Cannot insert or delete events nor rewrite payloads.
consumer     the inbox helper: SELECT/INSERT/UPDATE on ``inbox``, SELECT/INSERT on ``inbox_redelivery`` and
             ``subscription``.
auditor      SELECT on every table. Read-only (the reconciler's checkpoints are written by ``operator``).
operator     ``outbox replay | dlq | prune``: SELECT on every table; UPDATE of event state columns and shard;
             DELETE on ``event``; UPDATE on ``dead_letter``; INSERT/UPDATE on ``replay_audit``; INSERT on
             ``reconcile_checkpoint`` (``outbox reconcile`` writing checkpoints runs as operator).
============ ===========================================================================================

Identity columns need no sequence privilege (Postgres draws identity values without an ACL check), so no
role gets USAGE on any sequence.
"""

from __future__ import annotations

import re
from enum import Enum

from outbox.config import IDENT_PATTERN, MAX_IDENT
from outbox.errors import ConfigError

_IDENT = re.compile(IDENT_PATTERN)
_STATE_COLUMNS = "published_at, kafka_partition, kafka_offset, relay_epoch, attempts, last_error, dead_at"
_ALL_TABLES = ("event", "key_sequence", "dead_letter", "relay_lease", "relay_requeue", "relay_instance",
               "relay_identity", "inbox", "inbox_redelivery", "subscription", "reconcile_checkpoint", "replay_audit",
               "alembic_version")


class Role(Enum):
    APP = "app"
    RELAY = "relay"
    CONSUMER = "consumer"
    AUDITOR = "auditor"
    OPERATOR = "operator"


def role_name(role: Role, prefix: str = "outbox") -> str:
    return f"{prefix}_{role.value}"


def _grants(role: Role) -> list[str]:
    """GRANT bodies (``privileges ON object``) with ``{s}`` for the schema."""
    if role is Role.APP:
        return ["INSERT ON {s}.event", "SELECT (id, event_id) ON {s}.event",
                "SELECT, INSERT, UPDATE ON {s}.key_sequence"]
    if role is Role.RELAY:
        return ["SELECT ON {s}.event", f"UPDATE ({_STATE_COLUMNS}) ON {{s}}.event",
                "SELECT, INSERT ON {s}.dead_letter",
                # a retried row that fails again reopens its dead letter (ON CONFLICT DO UPDATE)
                "UPDATE (reason, error_class, attempts, failed_at, resolved_at, resolution, resolved_by) "
                "ON {s}.dead_letter",
                "SELECT, INSERT, UPDATE, DELETE ON {s}.relay_lease, {s}.relay_instance", "SELECT ON {s}.relay_requeue",
                "SELECT, INSERT, UPDATE ON {s}.relay_identity", "SELECT ON {s}.alembic_version"]
    if role is Role.CONSUMER:
        return ["SELECT, INSERT, UPDATE ON {s}.inbox", "SELECT, INSERT ON {s}.inbox_redelivery",
                "SELECT, INSERT ON {s}.subscription"]
    if role is Role.AUDITOR:
        return ["SELECT ON " + ", ".join("{s}." + t for t in _ALL_TABLES)]
    # shard too: replay and dlq retry re-queue a row into its key's shard under the count in use now
    return ["SELECT ON " + ", ".join("{s}." + t for t in _ALL_TABLES),
            f"UPDATE ({_STATE_COLUMNS}, shard) ON {{s}}.event", "DELETE ON {s}.event",
            "UPDATE ON {s}.dead_letter", "UPDATE ON {s}.relay_requeue", "INSERT, UPDATE ON {s}.replay_audit",
            "INSERT ON {s}.reconcile_checkpoint"]


def roles_sql(schema: str = "outbox", prefix: str = "outbox", roles: tuple[Role, ...] = tuple(Role)) -> str:
    """The DDL creating ``roles`` (default: all) with their grants on ``schema``; idempotent."""
    for what, value in (("schema", schema), ("prefix", prefix)):
        if not _IDENT.fullmatch(value) or len(value) > MAX_IDENT:
            raise ValueError(f"{what} must be a plain SQL identifier, got {value!r}")
    # Postgres truncates a longer role name silently: two truncated names could be one role.
    longest = max(roles, key=lambda r: len(role_name(r, "")), default=None)
    room = MAX_IDENT - len(role_name(longest, "")) if longest is not None else MAX_IDENT
    if len(prefix) > room:
        example = role_name(longest, "<prefix>") if longest else ""
        raise ConfigError(f"prefix is {len(prefix)} characters long: at most {room}, since role names such as "
                          f"{example} must fit in Postgres' {MAX_IDENT} characters")
    s = f'"{schema}"'
    out = [f"-- kafka-outbox least-privilege roles for schema {schema} (idempotent; re-run after upgrades)",
           "BEGIN;"]
    for role in roles:
        name = role_name(role, prefix)
        out += [
            f"\n-- {role.value}",
            "DO $$ BEGIN\n"
            f'  CREATE ROLE "{name}" NOLOGIN;\n'
            "EXCEPTION WHEN duplicate_object THEN NULL;\nEND $$;",
            f'GRANT USAGE ON SCHEMA {s} TO "{name}";',
            *(f'GRANT {g.format(s=s)} TO "{name}";' for g in _grants(role)),
        ]
    out.append("COMMIT;")
    return "\n".join(out) + "\n"
