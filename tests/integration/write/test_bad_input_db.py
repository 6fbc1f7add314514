"""Misuse that only the database shows (API review findings): AUTOCOMMIT connections, re-used event ids, and an
async enqueue that was never awaited. Tests that commit use ``fresh_db``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import outbox
from outbox.errors import AttributeValueError, SessionStateError


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _ev(topic: str, **kw: Any) -> outbox.Event:
    return outbox.Event(topic=topic, type="x", data={"n": 1}, **kw)


@pytest.fixture
def db(fresh_db: str) -> Iterator[str]:
    """A fresh database with a business table ``biz`` next to the outbox."""
    eng = sa.create_engine(fresh_db)
    with eng.begin() as c:
        c.execute(sa.text("CREATE TABLE public.biz (n int)"))
    eng.dispose()
    yield fresh_db


def _committed(url: str, topic: str) -> tuple[int, int]:
    """(events of ``topic``, business rows) that were committed."""
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            n = c.execute(sa.text("SELECT count(*) FROM outbox.event WHERE topic = :t"), {"t": topic}).scalar_one()
            b = c.execute(sa.text("SELECT count(*) FROM public.biz")).scalar_one()
            return n, b
    finally:
        eng.dispose()


# --- AUTOCOMMIT: SQLAlchemy reports a transaction, but each statement commits on its own ------------------------

def test_autocommit_connection_and_session_are_refused(db: str) -> None:
    t = _topic()
    engine = sa.create_engine(db)
    ac_engine = sa.create_engine(db, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c, c.begin() as txn:
            with pytest.raises(SessionStateError, match="AUTOCOMMIT mode"):
                outbox.enqueue(c, _ev(t, key="k"))
            txn.rollback()
        with Session(ac_engine) as s, s.begin():
            with pytest.raises(SessionStateError, match="enqueue needs a real transaction"):
                outbox.enqueue(s, _ev(t), _ev(t))
            s.rollback()
        with engine.connect() as c, c.begin():  # the same pool, back to a real transaction: accepted
            assert outbox.enqueue(c, _ev(t, key="k"))[0].key_seq == 1
            c.rollback()
    finally:
        engine.dispose()
        ac_engine.dispose()
    assert _committed(db, t) == (0, 0)


def test_autocommit_async_session_and_connection_are_refused(db: str) -> None:
    t = _topic()

    async def run() -> None:
        engine = create_async_engine(db)
        ac_engine = create_async_engine(db, isolation_level="AUTOCOMMIT")
        try:
            async with AsyncSession(ac_engine) as s, s.begin():
                with pytest.raises(SessionStateError, match="AUTOCOMMIT mode"):
                    await outbox.enqueue(s, _ev(t, key="k"))
                await s.rollback()
            async with engine.connect() as plain:
                c = await plain.execution_options(isolation_level="AUTOCOMMIT")
                async with c.begin() as txn:
                    with pytest.raises(SessionStateError, match="AUTOCOMMIT mode"):
                        await outbox.enqueue(c, _ev(t, key="k"))
                    await txn.rollback()
        finally:
            await engine.dispose()
            await ac_engine.dispose()

    asyncio.run(run())
    assert _committed(db, t) == (0, 0)


# --- a re-used event id: a unique violation that aborts the transaction --------------------------------------------

@pytest.mark.parametrize(("first", "second"), [(1, 1), (1, 3), (3, 1)], ids=["one-one", "one-batch", "batch-one"])
def test_reused_event_id_in_one_transaction(connection: sa.Connection, first: int, second: int) -> None:
    t, eid = _topic(), uuid.uuid4()
    outbox.enqueue(connection, _ev(t, id=eid, key="k"), *[_ev(t) for _ in range(first - 1)])
    with pytest.raises(AttributeValueError, match=rf"event id {eid} is already in the outbox.*roll it back"):
        outbox.enqueue(connection, *[_ev(t) for _ in range(second - 1)], _ev(t, id=eid, key="k"))


def test_reused_event_id_through_sqlalchemy_execution(connection: sa.Connection) -> None:
    seen: list[str] = []
    sa.event.listen(connection, "before_cursor_execute", lambda *a: seen.append(a[2]))  # takes exec_driver_sql
    t, eid = _topic(), uuid.uuid4()
    outbox.enqueue(connection, _ev(t, id=eid))
    with pytest.raises(AttributeValueError, match=rf"event id {eid} is already in the outbox"):
        outbox.enqueue(connection, _ev(t, id=eid))
    assert len(seen) == 2


def test_reused_committed_event_id(db: str) -> None:
    t, eid = _topic(), uuid.uuid4()
    engine = sa.create_engine(db)
    try:
        with engine.begin() as c:
            outbox.enqueue(c, _ev(t, id=eid))
        with engine.connect() as c, c.begin():
            with pytest.raises(AttributeValueError, match=rf"event id {eid} is already in the outbox"):
                outbox.enqueue(c, _ev(t, id=eid), _ev(t))
            c.rollback()
    finally:
        engine.dispose()
    assert _committed(db, t) == (1, 0)


# --- enqueue on an async target without await: the commit is refused ----------------------------------------------

def _close(coro: Any) -> None:
    """Discard a coroutine that was never awaited, as the caller's code would have (no 'never awaited' warning)."""
    assert isinstance(coro, Coroutine)
    coro.close()


def test_unawaited_enqueue_refuses_the_commit(db: str) -> None:
    t = _topic()

    async def run() -> None:
        engine = create_async_engine(db)
        try:
            async with AsyncSession(engine) as s:
                with pytest.raises(SessionStateError, match="never awaited"):
                    async with s.begin():
                        await s.execute(sa.text("INSERT INTO public.biz VALUES (1)"))
                        lost = outbox.enqueue(s, _ev(t))  # forgot await
                _close(lost)
            conn: AsyncConnection
            async with engine.connect() as conn:
                with pytest.raises(SessionStateError, match="1 call"):
                    async with conn.begin():
                        await conn.execute(sa.text("INSERT INTO public.biz VALUES (2)"))
                        lost = outbox.enqueue(conn, _ev(t))
                _close(lost)
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert _committed(db, t) == (0, 0)


def test_awaited_later_or_rolled_back_is_fine(db: str) -> None:
    t = _topic()

    async def run() -> None:
        engine = create_async_engine(db)
        try:
            async with AsyncSession(engine) as s:
                async with s.begin():
                    dropped = outbox.enqueue(s, _ev(t, subject="rolled back"))
                    await s.rollback()  # the transaction it was for is gone: no later commit is refused for it
                _close(dropped)
                async with s.begin():
                    later = outbox.enqueue(s, _ev(t, subject="awaited later"))
                    async with s.begin_nested():  # a savepoint's release is not the commit
                        await s.execute(sa.text("INSERT INTO public.biz VALUES (1)"))
                    await later
                async with s.begin():
                    await outbox.enqueue(s, _ev(t, subject="awaited"))
        finally:
            await engine.dispose()

    asyncio.run(run())
    assert _committed(db, t) == (2, 1)
