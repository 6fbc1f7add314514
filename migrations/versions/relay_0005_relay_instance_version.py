"""relay_instance.version: the kafka-outbox version of each running relay

Revision ID: relay_0005
Revises: relay_0004
Create Date: 2026-12-07 05:00:00

Why: some upgrades need every relay of the old build gone before a step (docs/operations.md, "Upgrading"). Each
relay now records its version (``outbox.__version__``) with its heartbeat, and ``outbox status`` shows it per
instance, so an operator can see when no old relay is left. Nullable: relays of earlier builds keep
heartbeating without it during the rollout, and show as ``unknown``. The relay role's table-wide INSERT and
UPDATE on ``relay_instance`` already cover the column.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import schema_name

revision = 'relay_0005'
down_revision = 'relay_0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('relay_instance', sa.Column('version', sa.Text(), nullable=True), schema=schema_name())


def downgrade() -> None:
    op.drop_column('relay_instance', 'version', schema=schema_name())
