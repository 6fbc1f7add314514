"""event: CHECK constraints refusing rows the relay cannot publish; merges the audit, ops and relay branches

Revision ID: relay_0003
Revises: audit_0002, ops_0002, relay_0002
Create Date: 2026-12-07 02:00:00

Why (docs/decisions/012-poison-rows-and-held-keys.md): ``enqueue`` validates what it writes, but a row written by
hand, by an older writer or by a bad migration reached the relay with a negative shard or one at or above 1024, the
most shards there can be (never claimed, silently stranded), a time of ``infinity`` or year 10000 (no client converts it: every claim of its shard failed), or
headers that are not a list of ``{name, value}`` objects (the worker raised on it in a loop). The relay now
dead-letters such rows; these constraints refuse them when they are written.

* Each applies to live rows only (``dead_at IS NOT NULL OR ...``): a CHECK is evaluated on every UPDATE, so
  without that the relay could not dead-letter a bad row that predates the constraint.
* Added ``NOT VALID`` (a brief lock, no scan), then validated outside the migration's transaction, where
  ``VALIDATE CONSTRAINT`` scans without blocking writers. Where rows written before violate one, it stays
  NOT VALID and the upgrade still succeeds: the relay dead-letters those rows, and
  ``ALTER TABLE ... VALIDATE CONSTRAINT`` may be run afterwards. (A NOT VALID CHECK also makes SQLAlchemy 2.1 warn
  when it reflects the table: "Can't validate argument 'dialect_options'".)
* The bounds are their owners' values, written out: the shard range is ``outbox.config.MAX_SHARDS``, the time
  span ``outbox.event.TIME_MIN``..``TIME_MAX`` (what every client can read back), the topic pattern
  ``outbox.event.TOPIC_RE`` (``tests/integration/test_migrations.py`` checks they still agree).
"""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from alembic import op

from migrations import schema_name

revision = 'relay_0003'
down_revision = ('audit_0002', 'ops_0002', 'relay_0002')
branch_labels = None
depends_on = None

# Kept literal here (not imported from outbox.schema): a migration must keep meaning what it meant when written.
CHECKS = {
    "ck_event_shard_in_range": "dead_at IS NOT NULL OR (shard >= 0 AND shard < 1024)",
    "ck_event_time_in_range": "dead_at IS NOT NULL OR (\"time\" >= '0001-01-02 00:00:00+00:00' "
                              "AND \"time\" <= '9999-12-30 23:59:59.999999+00:00')",
    "ck_event_headers_list": "dead_at IS NOT NULL OR (jsonb_typeof(headers) = 'array' AND NOT "
                             "jsonb_path_exists(headers, '$[*] ? (@.type() != \"object\" || !exists(@.name) "
                             "|| !(exists(@.value) || exists(@.base64)))'))",
    "ck_event_topic_name": "dead_at IS NOT NULL OR (topic ~ '^[a-zA-Z0-9._-]{1,249}$' AND topic NOT IN ('.', '..'))",
    "ck_event_attributes_present": "dead_at IS NOT NULL OR (type <> '' AND source <> '' AND content_type <> '')",
}


def upgrade() -> None:
    table = f'"{schema_name()}".event'
    for name, condition in CHECKS.items():
        # DROP IF EXISTS first: a run that failed after the commit below is repeated cleanly.
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}, "
                   f"ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    with op.get_context().autocommit_block():
        for name in CHECKS:
            # Existing rows violate it: it stays NOT VALID (see the module docstring).
            with contextlib.suppress(sa.exc.IntegrityError):
                op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def downgrade() -> None:
    table = f'"{schema_name()}".event'
    for name in reversed(CHECKS):
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
