"""initial schema: events, key sequences, dead letters, leases, inbox, reconcile checkpoints

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 03:19:31.103483
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations import schema_name

revision = '0001'
down_revision = None
branch_labels = ('outbox',)
depends_on = None


def upgrade() -> None:
    schema = schema_name()
    # A host app's Alembic env runs this without our env.py, which is what normally creates the schema.
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    op.create_table('dead_letter',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_pk', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('key_seq', sa.BigInteger(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('error_class', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('failed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('resolved_by', sa.Text(), nullable=True),
    sa.CheckConstraint("resolution IN ('retried', 'discarded')", name=op.f('ck_dead_letter_resolution_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letter')),
    sa.UniqueConstraint('event_pk', name=op.f('uq_dead_letter_event_pk')),
    schema=schema
    )
    op.create_index('ix_dead_letter_open', 'dead_letter', ['topic', 'key'], unique=False, schema=schema, postgresql_where=sa.text('resolved_at IS NULL'))
    op.create_table('event',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('shard', sa.SmallInteger(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.Text(), nullable=False),
    sa.Column('type', sa.Text(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), nullable=True),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('headers', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('traceparent', sa.Text(), nullable=True),
    sa.Column('key_seq', sa.BigInteger(), nullable=True),
    sa.Column('tx_id', sa.Text(), server_default=sa.text('(pg_current_xact_id())::text'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('kafka_partition', sa.Integer(), nullable=True),
    sa.Column('kafka_offset', sa.BigInteger(), nullable=True),
    sa.Column('relay_epoch', sa.BigInteger(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('dead_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint('(key IS NULL) = (key_seq IS NULL)', name=op.f('ck_event_key_seq_iff_key')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event')),
    sa.UniqueConstraint('event_id', name=op.f('uq_event_event_id')),
    schema=schema
    )
    op.create_index('ix_event_pending', 'event', ['shard', 'id'], unique=False, schema=schema, postgresql_where=sa.text('published_at IS NULL AND dead_at IS NULL'))
    op.create_index('ix_event_topic_key_seq', 'event', ['topic', 'key', 'key_seq'], unique=False, schema=schema)
    op.create_table('inbox',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('kafka_partition', sa.Integer(), nullable=False),
    sa.Column('kafka_offset', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=True),
    sa.Column('key_seq', sa.BigInteger(), nullable=True),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.CheckConstraint("outcome IN ('processed', 'dead_lettered')", name=op.f('ck_inbox_outcome_known')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbox')),
    sa.UniqueConstraint('consumer_group', 'event_id', name=op.f('uq_inbox_consumer_group_event_id')),
    schema=schema
    )
    op.create_table('key_sequence',
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('key', sa.LargeBinary(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('topic', 'key', name=op.f('pk_key_sequence')),
    schema=schema
    )
    op.create_table('reconcile_checkpoint',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('id_lo', sa.BigInteger(), nullable=False),
    sa.Column('id_hi', sa.BigInteger(), nullable=False),
    sa.Column('expected', sa.BigInteger(), nullable=False),
    sa.Column('acknowledged', sa.BigInteger(), nullable=False),
    sa.Column('digest', sa.Text(), nullable=False),
    sa.Column('report_sha256', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconcile_checkpoint')),
    schema=schema
    )
    op.create_index('ix_reconcile_checkpoint_group_hi', 'reconcile_checkpoint', ['consumer_group', 'id_hi'], unique=False, schema=schema)
    op.create_table('relay_instance',
    sa.Column('instance_id', sa.Text(), nullable=False),
    sa.Column('host', sa.Text(), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('instance_id', name=op.f('pk_relay_instance')),
    schema=schema
    )
    op.create_table('relay_lease',
    sa.Column('shard', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('owner', sa.Text(), nullable=True),
    sa.Column('epoch', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('renewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('shard', name=op.f('pk_relay_lease')),
    schema=schema
    )
    op.create_table('replay_audit',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('selector', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('event_count', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_replay_audit')),
    schema=schema
    )
    op.create_table('subscription',
    sa.Column('consumer_group', sa.Text(), nullable=False),
    sa.Column('topic', sa.Text(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('consumer_group', 'topic', name=op.f('pk_subscription')),
    schema=schema
    )


def downgrade() -> None:
    schema = schema_name()
    op.drop_table('subscription', schema=schema)
    op.drop_table('replay_audit', schema=schema)
    op.drop_table('relay_lease', schema=schema)
    op.drop_table('relay_instance', schema=schema)
    op.drop_index('ix_reconcile_checkpoint_group_hi', table_name='reconcile_checkpoint', schema=schema)
    op.drop_table('reconcile_checkpoint', schema=schema)
    op.drop_table('key_sequence', schema=schema)
    op.drop_table('inbox', schema=schema)
    op.drop_index('ix_event_topic_key_seq', table_name='event', schema=schema)
    op.drop_index('ix_event_pending', table_name='event', schema=schema, postgresql_where=sa.text('published_at IS NULL AND dead_at IS NULL'))
    op.drop_table('event', schema=schema)
    op.drop_index('ix_dead_letter_open', table_name='dead_letter', schema=schema, postgresql_where=sa.text('resolved_at IS NULL'))
    op.drop_table('dead_letter', schema=schema)
