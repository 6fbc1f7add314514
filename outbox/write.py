"""``enqueue``: write events in the caller's transaction, never commit.

It is safe to call inside any business transaction (River's ``InsertTx`` argument): the rows become visible to
the relay only when the caller commits, and vanish with a rollback, so the events exist if and only if the
business change does. Every event is checked before any SQL runs.

One sync core serves both worlds: ``AsyncSession``/``AsyncConnection`` run the same core through ``run_sync``,
so ``await outbox.enqueue(async_session, ...)`` returns exactly what the sync call returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import overload

import sqlalchemy as sa
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox.config import settings
from outbox.errors import SessionStateError
from outbox.event import Event, StoredEvent
from outbox.store import write as store
from outbox.validation import Prepared, prepare

SyncTarget = Session | sa.Connection
AsyncTarget = AsyncSession | AsyncConnection

_NO_TXN = (
    "has no active transaction (it was committed or rolled back, or has not begun): enqueue inside the "
    "business transaction, e.g. `with session.begin():` / after `session.add(...)`, and commit after it"
)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active OpenTelemetry span, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _check_session(s: Session | AsyncSession) -> None:
    if not s.in_transaction():
        raise SessionStateError(f"the session {_NO_TXN}")
    txn = s.get_transaction()
    if txn is not None and not txn.is_active:
        raise SessionStateError(
            "the session's transaction is inactive (an earlier error needs session.rollback()); nothing written"
        )


def _check_connection(c: sa.Connection | AsyncConnection) -> None:
    if c.closed or c.invalidated:
        raise SessionStateError("the connection is closed or invalidated; use an open connection")
    if not c.in_transaction():
        raise SessionStateError(f"the connection {_NO_TXN}")
    txn = c.get_transaction()
    if txn is not None and not txn.is_active:
        raise SessionStateError("the connection's transaction is inactive (it needs rollback()); nothing written")


def _write(target: SyncTarget, prepared: Sequence[Prepared], traceparent: str | None) -> list[StoredEvent]:
    conn = target.connection() if isinstance(target, Session) else target
    return store.insert_events(conn, prepared, traceparent=traceparent, schema=settings().schema)


@overload
def enqueue(target: SyncTarget, /, *events: Event) -> list[StoredEvent]: ...
@overload
def enqueue(target: AsyncTarget, /, *events: Event) -> Awaitable[list[StoredEvent]]: ...


def enqueue(
    target: SyncTarget | AsyncTarget, /, *events: Event
) -> list[StoredEvent] | Awaitable[list[StoredEvent]]:
    """Store ``events`` in the transaction of ``target`` (a Session, Connection, AsyncSession or
    AsyncConnection) and return what was stored, in argument order. Never commits.

    Raises an :class:`~outbox.errors.EventValidationError` (nothing written) for a bad event,
    :class:`~outbox.errors.SessionStateError` when ``target`` has no active transaction, and
    :class:`~outbox.errors.StoreError` when the database fails. With an async target, await the result.
    """
    if isinstance(target, Session | AsyncSession):
        _check_session(target)
    elif isinstance(target, sa.Connection | AsyncConnection):
        _check_connection(target)
    else:
        raise SessionStateError(
            f"enqueue needs a SQLAlchemy Session, Connection, AsyncSession or AsyncConnection, "
            f"got {type(target).__name__}"
        )
    prepared = prepare(events, settings())
    traceparent = current_traceparent()
    if isinstance(target, AsyncSession | AsyncConnection):
        return _write_async(target, prepared, traceparent)
    if not prepared:
        return []
    return _write(target, prepared, traceparent)


async def _write_async(
    target: AsyncTarget, prepared: Sequence[Prepared], traceparent: str | None
) -> list[StoredEvent]:
    if not prepared:
        return []
    if isinstance(target, AsyncSession):
        return await target.run_sync(_write, prepared, traceparent)
    return await target.run_sync(_write, prepared, traceparent)
