"""inbox: outbox_id join key + ack-order index; inbox_redelivery (copies of an event from another position)

Revision ID: audit_0002
Revises: 0001
Create Date: 2026-11-22 03:45:00

Why (docs/decisions/020-reconciler-digests.md): the reconciler buckets both sides by the outbox row id, so the
inbox keeps the ``outbox-id`` header; it checks per-key ack order by reading an index presorted by
(group, topic, key, id); and a copy of an acknowledged event arriving from a different Kafka position is recorded
so that "published twice" stays provable even though the inbox deduplicated it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations import schema_name

revision = 'audit_0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = schema_name()
    op.add_column('inbox', sa.Column('outbox_id', sa.BigInteger(), nullable=True), schema=schema)
    op.create_index('ix_inbox_group_outbox_id', 'inbox', ['consumer_group', 'outbox_id'], unique=False,
                    schema=schema)
    op.create_index('ix_inbox_group_key_order', 'inbox', ['consumer_group', 'topic', 'key', 'id'], unique=False,
                    schema=schema, postgresql_include=['key_seq', 'outbox_id'])
    op.create_table('inbox_redelivery',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('kafka_partition', sa.Integer(), nullable=False),
    sa.Column('kafka_offset', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox_redelivery')),
    sa.UniqueConstraint('consumer_group', 'event_id', 'topic', 'kafka_partition', 'kafka_offset',
                        name='uq_inbox_redelivery_copy'),
    schema=schema
    )


def downgrade() -> None:
    schema = schema_name()
    op.drop_table('inbox_redelivery', schema=schema)
    op.drop_index('ix_inbox_group_key_order', table_name='inbox', schema=schema)
    op.drop_index('ix_inbox_group_outbox_id', table_name='inbox', schema=schema)
    op.drop_column('inbox', 'outbox_id', schema=schema)
