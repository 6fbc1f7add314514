"""enqueue refuses sessions/connections that cannot take events, before any SQL (sqlite stands in: no SQL runs)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

import outbox
from outbox.errors import PayloadError, SessionStateError

EV = outbox.Event(topic="t", type="x", data=1)


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    e = sa.create_engine("sqlite://")
    yield e
    e.dispose()


def test_fresh_session(engine: sa.Engine) -> None:
    with Session(engine) as s, pytest.raises(SessionStateError, match="no active transaction"):
        outbox.enqueue(s, EV)


def test_committed_session(engine: sa.Engine) -> None:
    with Session(engine) as s:
        s.execute(sa.text("select 1"))
        s.commit()
        with pytest.raises(SessionStateError, match="committed or rolled back"):
            outbox.enqueue(s, EV)


def test_closed_session(engine: sa.Engine) -> None:
    s = Session(engine)
    s.begin()
    s.close()
    with pytest.raises(SessionStateError):
        outbox.enqueue(s, EV)


def test_closed_connection(engine: sa.Engine) -> None:
    c = engine.connect()
    c.close()
    with pytest.raises(SessionStateError, match="closed"):
        outbox.enqueue(c, EV)


def test_connection_after_commit(engine: sa.Engine) -> None:
    with engine.connect() as c:
        c.execute(sa.text("select 1"))
        c.commit()
        with pytest.raises(SessionStateError, match="no active transaction"):
            outbox.enqueue(c, EV)


def test_not_a_session() -> None:
    with pytest.raises(SessionStateError, match="needs a SQLAlchemy Session"):
        outbox.enqueue(object(), EV)  # type: ignore[call-overload]


def test_validation_runs_before_state_is_used(engine: sa.Engine) -> None:
    with Session(engine) as s, s.begin(), pytest.raises(PayloadError):
        outbox.enqueue(s, outbox.Event(topic="t", type="x", data={"n": float("nan")}))


def test_async_session_without_transaction() -> None:
    async def run() -> None:
        async with AsyncSession() as s:
            with pytest.raises(SessionStateError, match="no active transaction"):
                await outbox.enqueue(s, EV)

    asyncio.run(run())
