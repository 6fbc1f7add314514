"""relay_identity: the outbox's recorded id in Kafka

Revision ID: relay_0004
Revises: relay_0003
Create Date: 2026-12-07 03:00:00

Why (relay/identity.py): transactional ids and checkpoint records derive from the outbox's id, first computed
from (system identifier, database, schema). A pg_upgrade gives the cluster a new system identifier; recording
the id at the relays' first start keeps it, so an upgrade neither re-sends the last batch nor looks like another
outbox. Empty here: a database cloned from a migrated template must not inherit an id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import schema_name

revision = 'relay_0004'
down_revision = 'relay_0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('relay_identity',
    sa.Column('id', sa.SmallInteger(), server_default=sa.text('1'), autoincrement=False, nullable=False),
    sa.Column('outbox_id', sa.Text(), nullable=False),
    sa.Column('system_identifier', sa.Text(), nullable=False),
    sa.Column('database', sa.Text(), nullable=False),
    sa.Column('schema', sa.Text(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_relay_identity_one_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relay_identity')),
    schema=schema_name()
    )


def downgrade() -> None:
    op.drop_table('relay_identity', schema=schema_name())
