"""enqueue's driver seam: the statement goes to a psycopg cursor directly, prepared once per connection, unless
something watches SQLAlchemy's execution; driver errors are translated and a lost connection is invalidated."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

import outbox
from outbox.errors import DatabaseUnavailableError


def _event(topic: str, key: str = "k") -> outbox.Event:
    return outbox.Event(topic=topic, type="x", key=key, data={"k": key})


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_statement_is_prepared_once_per_connection(engine: sa.Engine) -> None:
    t = _topic()
    with engine.connect() as c, c.begin() as txn:
        stored = [outbox.enqueue(c, _event(t))[0] for _ in range(8)]
        assert [s.key_seq for s in stored] == list(range(1, 9))
        plans = c.execute(sa.text(
            "SELECT generic_plans + custom_plans FROM pg_prepared_statements WHERE statement LIKE '%key_sequence%'"
        )).scalars().all()
        txn.rollback()
    # psycopg prepares a statement from its 5th execution on; later calls only bind and execute
    assert len(plans) == 1 and plans[0] >= 3


def test_a_rollback_leaves_the_connection_ready_for_the_next_transaction(engine: sa.Engine) -> None:
    t = _topic()
    with engine.connect() as c:
        with c.begin() as txn:
            assert outbox.enqueue(c, _event(t))[0].key_seq == 1
            txn.rollback()
        with c.begin() as txn:
            assert outbox.enqueue(c, _event(t))[0].key_seq == 1  # the rollback undid the first number
            txn.rollback()


def test_sqlalchemy_listeners_still_see_the_statement(engine: sa.Engine) -> None:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    t = _topic()
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        with engine.connect() as c, c.begin() as txn:
            [stored] = outbox.enqueue(c, _event(t))
            assert stored.key_seq == 1
            txn.rollback()
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert any("key_sequence" in s for s in seen), "instrumentation (e.g. OpenTelemetry) must see the enqueue"


def test_a_lost_connection_is_translated_and_invalidated(pg_url: str) -> None:
    eng = sa.create_engine(pg_url, pool_size=1, max_overflow=0)
    admin = sa.create_engine(pg_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as c:
            c.begin()
            pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with admin.connect() as a:  # waits (up to 5 s) until the backend is gone
                assert a.execute(sa.text("SELECT pg_terminate_backend(:p, 5000)"), {"p": pid}).scalar_one()
            with pytest.raises(DatabaseUnavailableError, match="enqueueing events"):
                outbox.enqueue(c, _event(_topic()))
            assert c.invalidated
            c.rollback()
        with eng.connect() as c:  # the pool replaced the dead connection
            assert c.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        eng.dispose()
        admin.dispose()
