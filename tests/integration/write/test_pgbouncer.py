"""Writers behind a real PgBouncer (docs/write-side.md, "Behind PgBouncer").

Two client connections take turns, one transaction each, so PgBouncer serves both from the same server connection
(it reuses the most recently released one). psycopg prepares a statement on a connection's sixth execution, under
a per-connection name (``_pg3_0``): the second client's prepare then clashes with the first's on that server, or
finds its own gone. The harness's PgBouncer is Debian 12's 1.18, which has no ``max_prepared_statements``: there
``prepare_threshold=None`` is the fix, and without it enqueue raises the typed PoolingModeError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import outbox
from outbox.errors import ConfigError, PoolingModeError
from stack.pgbouncer import PgBouncer

ROUNDS = 8  # per connection: past psycopg's default prepare_threshold (5)
NO_PREPARE = {"prepare_threshold": None}


def _through(pgbouncer: Callable[[str], PgBouncer], fresh_db: str, pool_mode: str = "transaction") -> str:
    return pgbouncer(pool_mode).url(sa.make_url(fresh_db).database or "")


def _event(i: int) -> outbox.Event:
    return outbox.Event(topic="orders", type="com.example.order.created", key="order-1", data={"i": i})


def _rows(fresh_db: str) -> list[tuple[Any, ...]]:
    """The committed rows, read directly from Postgres (not through PgBouncer)."""
    eng = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as c:
            return [tuple(r) for r in c.execute(sa.text("SELECT event_id, key_seq FROM outbox.event ORDER BY id"))]
    finally:
        eng.dispose()


def _write_sync(url: str, connect_args: dict[str, Any]) -> list[Any]:
    eng = sa.create_engine(url, pool_size=2, connect_args=connect_args)
    ids: list[Any] = []
    try:
        with eng.connect() as c1, eng.connect() as c2, Session(bind=c1) as s1, Session(bind=c2) as s2:
            for i in range(ROUNDS):
                for s in (s1, s2):
                    with s.begin():
                        ids += [e.event_id for e in outbox.enqueue(s, _event(i))]
    finally:
        eng.dispose()
    return ids


async def _write_async(url: str, connect_args: dict[str, Any]) -> list[Any]:
    eng = create_async_engine(url, pool_size=2, connect_args=connect_args)
    ids: list[Any] = []
    try:
        async with eng.connect() as c1, eng.connect() as c2:
            conns: tuple[AsyncConnection, AsyncConnection] = (c1, c2)
            for i in range(ROUNDS):
                for c in conns:
                    async with AsyncSession(bind=c) as s, s.begin():
                        ids += [e.event_id for e in await outbox.enqueue(s, _event(i))]
    finally:
        await eng.dispose()
    return ids


def test_sync_sessions_enqueue_through_transaction_pooling_without_prepared_statements(
        fresh_db: str, pgbouncer: Callable[[str], PgBouncer]) -> None:
    ids = _write_sync(_through(pgbouncer, fresh_db), NO_PREPARE)
    assert len(ids) == 2 * ROUNDS
    assert _rows(fresh_db) == [(e, n) for n, e in enumerate(ids, 1)]  # every row, in commit order, no gap


def test_async_sessions_enqueue_through_transaction_pooling_without_prepared_statements(
        fresh_db: str, pgbouncer: Callable[[str], PgBouncer]) -> None:
    ids = asyncio.run(_write_async(_through(pgbouncer, fresh_db), NO_PREPARE))
    assert len(ids) == 2 * ROUNDS
    assert _rows(fresh_db) == [(e, n) for n, e in enumerate(ids, 1)]


def test_session_pooling_keeps_psycopgs_prepared_statements(fresh_db: str,
                                                            pgbouncer: Callable[[str], PgBouncer]) -> None:
    """Session pooling needs no setting: each client keeps its server connection, prepared statements included."""
    ids = _write_sync(_through(pgbouncer, fresh_db, "session"), {})
    assert _rows(fresh_db) == [(e, n) for n, e in enumerate(ids, 1)] and len(ids) == 2 * ROUNDS


@pytest.mark.parametrize("side", ["sync", "async"])
def test_prepared_statements_through_transaction_pooling_raise_a_typed_error_naming_the_fix(
        fresh_db: str, pgbouncer: Callable[[str], PgBouncer], side: str) -> None:
    """psycopg's defaults (sync and async alike prepare server-side) behind PgBouncer 1.18 in transaction mode:
    the clash is a PoolingModeError (a ConfigError) saying what to set, and the failed transaction wrote nothing."""
    url = _through(pgbouncer, fresh_db)
    with pytest.raises(PoolingModeError) as info:
        if side == "sync":
            _write_sync(url, {})
        else:
            asyncio.run(_write_async(url, {}))
    assert isinstance(info.value, ConfigError)
    said = str(info.value)
    assert "prepare_threshold" in said and "max_prepared_statements" in said and "_pg3_" in said, said
    rows = _rows(fresh_db)
    assert len(rows) < 2 * ROUNDS and [n for _, n in rows] == list(range(1, len(rows) + 1))
