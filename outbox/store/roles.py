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
             SELECT/INSERT/UPDATE/DELETE on ``relay_lease`` and ``relay_instance``; SELECT on the version
             table (the schema check). Cannot insert or delete events nor rewrite payloads.
consumer     the inbox helper: SELECT/INSERT/UPDATE on ``inbox``, SELECT/INSERT on ``inbox_redelivery`` and
             ``subscription``.
auditor      SELECT on every table and the version table. Read-only (the reconciler's checkpoints are written
             by ``operator``).
operator     ``outbox replay | dlq | prune``: SELECT on every table and the version table; UPDATE of event state
             columns and shard; DELETE on ``event``; UPDATE on ``dead_letter``; INSERT/UPDATE on
             ``replay_audit``; INSERT on ``reconcile_checkpoint`` (``outbox reconcile`` writing checkpoints runs
             as operator).
============ ===========================================================================================

The version table is the one recording our revisions: ``<schema>.alembic_version`` after ``outbox migrate``, or
the host application's own when its Alembic env runs our migrations (``outbox roles sql`` finds it with
``migrations.status``); outside the outbox schema, the relay, auditor and operator roles get USAGE on its schema.

Identity columns need no sequence privilege (Postgres draws identity values without an ACL check), so no
role gets USAGE on any sequence.
"""

from __future__ import annotations

from enum import Enum

from outbox.config import MAX_IDENT, is_identifier
from outbox.errors import ConfigError

_STATE_COLUMNS = "published_at, kafka_partition, kafka_offset, relay_epoch, attempts, last_error, dead_at"
_ALL_TABLES = ("event", "key_sequence", "dead_letter", "relay_lease", "relay_requeue", "relay_instance",
               "relay_identity", "inbox", "inbox_redelivery", "subscription", "reconcile_checkpoint", "replay_audit")
_VERSION_TABLE = "alembic_version"  # where `outbox migrate` records our revisions (migrations.VERSION_TABLE)


class Role(Enum):
    APP = "app"
    RELAY = "relay"
    CONSUMER = "consumer"
    AUDITOR = "auditor"
    OPERATOR = "operator"


def role_name(role: Role, prefix: str = "outbox") -> str:
    return f"{prefix}_{role.value}"


def _grants(role: Role) -> list[str]:
    """GRANT bodies (``privileges ON object``) with ``{s}`` for the schema and ``{v}`` for the version table."""
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
                "SELECT, INSERT, UPDATE ON {s}.relay_identity", "SELECT ON {v}"]
    if role is Role.CONSUMER:
        return ["SELECT, INSERT, UPDATE ON {s}.inbox", "SELECT, INSERT ON {s}.inbox_redelivery",
                "SELECT, INSERT ON {s}.subscription"]
    every_table = "SELECT ON " + ", ".join(["{s}." + t for t in _ALL_TABLES] + ["{v}"])
    if role is Role.AUDITOR:
        return [every_table]
    # shard too: replay and dlq retry re-queue a row into its key's shard under the count in use now
    return [every_table,
            f"UPDATE ({_STATE_COLUMNS}, shard) ON {{s}}.event", "DELETE ON {s}.event",
            "UPDATE ON {s}.dead_letter", "UPDATE ON {s}.relay_requeue", "INSERT, UPDATE ON {s}.replay_audit",
            "INSERT ON {s}.reconcile_checkpoint"]


def roles_sql(schema: str = "outbox", prefix: str = "outbox", roles: tuple[Role, ...] = tuple(Role),
              version_table: tuple[str | None, str] | None = None) -> str:
    """The DDL creating ``roles`` (default: all) with their grants on ``schema``; idempotent.

    ``version_table``: ``(schema, table)`` of the table recording our revisions when it is not
    ``<schema>.alembic_version`` (a host application's Alembic env runs them); schema None: unqualified, found
    through the search path of the session applying the script."""
    v_schema, v_name = version_table or (schema, _VERSION_TABLE)
    for what, value in (("schema", schema), ("prefix", prefix), ("version table", v_name),
                        ("version table schema", v_schema or schema)):
        if not is_identifier(value):
            raise ValueError(f"{what} must be a plain SQL identifier, got {value!r}")
    # Postgres truncates a longer role name silently: two truncated names could be one role.
    longest = max(roles, key=lambda r: len(role_name(r, "")), default=None)
    room = MAX_IDENT - len(role_name(longest, "")) if longest is not None else MAX_IDENT
    if len(prefix) > room:
        example = role_name(longest, "<prefix>") if longest else ""
        raise ConfigError(f"prefix is {len(prefix)} characters long: at most {room}, since role names such as "
                          f"{example} must fit in Postgres' {MAX_IDENT} characters")
    s = f'"{schema}"'
    # Quoted as given: a host's table name in another case would be folded to lower case unquoted.
    v = (f'"{v_schema}".' if v_schema else "") + f'"{v_name}"'
    # Reading a table in another schema needs USAGE on it too (public has it for everyone by default).
    usage = [f'"{v_schema}"'] if v_schema not in (None, schema) else []
    out = [f"-- kafka-outbox least-privilege roles for schema {schema} (idempotent; re-run after upgrades)",
           f"-- our revisions are recorded in {v_schema + '.' if v_schema else ''}{v_name}", "BEGIN;"]
    for role in roles:
        name = role_name(role, prefix)
        out += [
            f"\n-- {role.value}",
            "DO $$ BEGIN\n"
            f'  CREATE ROLE "{name}" NOLOGIN;\n'
            "EXCEPTION WHEN duplicate_object THEN NULL;\nEND $$;",
            f'GRANT USAGE ON SCHEMA {s} TO "{name}";',
            *(f'GRANT USAGE ON SCHEMA {u} TO "{name}";' for u in usage if "{v}" in "".join(_grants(role))),
            *(f'GRANT {g.format(s=s, v=v)} TO "{name}";' for g in _grants(role)),
        ]
    out.append("COMMIT;")
    return "\n".join(out) + "\n"
