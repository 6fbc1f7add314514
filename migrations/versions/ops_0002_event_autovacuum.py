"""event: autovacuum settings for the hot queue table

Revision ID: ops_0002
Revises: 0001
Create Date: 2026-11-22 04:00:00

Why (docs/decisions/031-retention-and-autovacuum.md): every event row is inserted, updated once when published
(a dead tuple) and deleted in batches by ``outbox prune`` (more dead tuples). Postgres' defaults vacuum a table
after 20 % of it is dead, which on a 50M-row outbox is 10M dead tuples; the claim reads the small partial
``ix_event_pending`` index, but its dead entries and the heap pages behind them are only cleaned by vacuum. The
settings below make vacuum run after ~1 % churn, with a larger I/O budget so it keeps up, and keep statistics
fresh for the planner.

Storage parameters are not compared by Alembic autogenerate, so the declared schema (``outbox/schema.py``)
needs no change and the empty-diff test is unaffected; ``tests/integration/ops/test_migration.py`` checks
``pg_class.reloptions`` instead, and that this revision steps down and up cleanly.
"""

from __future__ import annotations

from alembic import op

from migrations import schema_name

revision = 'ops_0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Kept literal here (not imported): a migration must keep meaning what it meant when it was written.
EVENT_RELOPTIONS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_vacuum_cost_limit": "2000",
}


def upgrade() -> None:
    opts = ", ".join(f"{k} = {v}" for k, v in EVENT_RELOPTIONS.items())
    op.execute(f'ALTER TABLE "{schema_name()}".event SET ({opts})')


def downgrade() -> None:
    op.execute(f'ALTER TABLE "{schema_name()}".event RESET ({", ".join(EVENT_RELOPTIONS)})')
