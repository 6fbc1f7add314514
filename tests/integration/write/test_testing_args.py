"""outbox.testing checks its arguments before any SQL: a wrong filter never passes silently nor aborts the test's
transaction, and a wrong target says what is accepted."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import outbox
from outbox import testing
from outbox.errors import AttributeValueError, KeyError_, SessionStateError, TopicError


@pytest.fixture
def one(connection: sa.Connection) -> sa.Connection:
    outbox.enqueue(connection, outbox.Event(topic="parcels", type="parcel.created", key="5", data={}))
    return connection


def _usable(conn: sa.Connection) -> None:
    assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1  # the test's transaction was not aborted
    testing.assert_enqueued(conn, topic="parcels", key="5", count=1)


@pytest.mark.parametrize("key", [5, 5.0, ["5"], bytearray(b"5")])
def test_a_key_filter_of_the_wrong_type_is_refused_not_ignored(one: sa.Connection, key: object) -> None:
    with pytest.raises(KeyError_, match="the key filter must be str, bytes, None"):
        testing.assert_enqueued(one, key=key, count=1)  # type: ignore[arg-type]
    with pytest.raises(KeyError_):
        testing.pending_events(one, key=key)  # type: ignore[arg-type]
    _usable(one)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"topic": 5}, TopicError, "the topic filter must be a str or None, got 5"),
    ({"type": b"parcel.created"}, AttributeValueError, "the type filter must be a str or None"),
    ({"topic": "par\x00cels"}, TopicError, "NUL or a lone surrogate"),
    ({"type": "parcel\udc80"}, AttributeValueError, "NUL or a lone surrogate"),
    ({"key": "5\udc80"}, KeyError_, "not valid Unicode"),
])
def test_bad_filters_fail_before_sql(one: sa.Connection, kwargs: dict[str, object], error: type[Exception],
                                     match: str) -> None:
    with pytest.raises(error, match=match):
        testing.pending_events(one, **kwargs)  # type: ignore[arg-type]
    _usable(one)


def test_str_and_bytes_keys_and_null_keys_still_filter(one: sa.Connection) -> None:
    outbox.enqueue(one, outbox.Event(topic="parcels", type="parcel.noted", data={}))
    assert [e.type for e in testing.pending_events(one, key=b"5")] == ["parcel.created"]
    assert [e.type for e in testing.pending_events(one, key="5")] == ["parcel.created"]
    assert [e.type for e in testing.pending_events(one, key=None)] == ["parcel.noted"]
    assert len(testing.pending_events(one)) == 2


def test_wrong_targets_say_what_is_accepted(engine: sa.Engine, pg_url: str) -> None:
    for target in (engine, None, Session):
        with pytest.raises(SessionStateError, match="needs a SQLAlchemy Session or Connection"):
            testing.pending_events(target)  # type: ignore[arg-type]
    with pytest.raises(SessionStateError, match=r"engine\.connect\(\)"):
        testing.assert_enqueued(engine, count=0)  # type: ignore[arg-type]
    async_engine = create_async_engine(pg_url)  # nothing connects: the check comes first
    with pytest.raises(SessionStateError, match="run_sync"):
        testing.pending_events(AsyncSession(async_engine))  # type: ignore[arg-type]
