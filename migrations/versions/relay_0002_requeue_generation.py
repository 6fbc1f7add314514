"""relay_requeue: the generation that invalidates the relays' claim floors

Revision ID: relay_0002
Revises: 0001
Create Date: 2026-12-01 06:00:00

Why (docs/decisions/015-claim-floor.md): a relay claims above a per-shard floor to skip the index entries of rows
it already published. Rows that become pending again below a floor (DLQ retry or discard, replay) bump ``gen`` in
the same transaction, and a claim that sees a new value starts from the bottom. One row, seeded here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import schema_name

revision = 'relay_0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = schema_name()
    op.create_table('relay_requeue',
    sa.Column('id', sa.SmallInteger(), server_default=sa.text('1'), autoincrement=False, nullable=False),
    sa.Column('gen', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_relay_requeue_one_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_relay_requeue')),
    schema=schema
    )
    op.execute(f'INSERT INTO "{schema}".relay_requeue (id, gen) VALUES (1, 0)')


def downgrade() -> None:
    op.drop_table('relay_requeue', schema=schema_name())
