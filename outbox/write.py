"""``enqueue``: write events in the caller's transaction, never commit.

It is safe to call inside any business transaction (River's ``InsertTx`` argument): the rows become visible to
the relay only when the caller commits, and vanish with a rollback, so the events exist if and only if the
business change does. Every event is checked before any SQL runs.

One sync core serves both worlds: ``AsyncSession``/``AsyncConnection`` run the same core through ``run_sync``,
so ``await outbox.enqueue(async_session, ...)`` returns exactly what the sync call returns. A call that is never
awaited writes nothing, so the commit of its transaction is refused (:func:`_expect_await`).
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Sequence
from typing import Any, overload

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from outbox.config import settings
from outbox.errors import SessionStateError
from outbox.event import Event, StoredEvent
from outbox.store import translate_errors
from outbox.store import write as store
from outbox.validation import Prepared, prepare

try:
    from opentelemetry import trace
except ModuleNotFoundError:  # the [otel] extra: without the API there is no active span to record
    trace = None  # type: ignore[assignment]

SyncTarget = Session | sa.Connection
AsyncTarget = AsyncSession | AsyncConnection

_NO_TXN = (
    "has no active transaction (it was committed or rolled back, or has not begun): enqueue inside the "
    "business transaction, e.g. `with session.begin():` / after `session.add(...)`, and commit after it"
)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the active OpenTelemetry span, or None when there is none (or no
    ``opentelemetry-api``: the ``[otel]`` extra)."""
    if trace is None:
        return None
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
    # A session's first statement checks a connection out of the pool here: a database that is down, or a pool
    # that stays exhausted, fails in this call. (try/except, not a `with`: free unless it raises, on the hot path)
    try:
        conn = target.connection() if isinstance(target, Session) else target
        dbapi_conn = conn.connection.dbapi_connection
    except sa.exc.SQLAlchemyError:
        with translate_errors("connecting to the database to enqueue events"):
            raise
    _check_not_autocommit(dbapi_conn)
    return store.insert_events(conn, prepared, traceparent=traceparent, schema=settings().schema)


def _check_not_autocommit(dbapi_conn: Any) -> None:
    """Refuse a connection in AUTOCOMMIT mode (``isolation_level="AUTOCOMMIT"`` on the engine or connection).

    SQLAlchemy still reports a transaction there (``begin()`` is only bookkeeping), but every statement commits on
    its own: the events would stay when the business transaction rolls back, and the per-key locks that order
    them would be released at once. psycopg (sync and SQLAlchemy's async adapter), psycopg2, asyncpg's adapter
    and pg8000 all expose the mode as the DBAPI connection's ``autocommit``: an attribute read, no round trip.
    ``is True``: sqlite3 (3.12+) says -1 for its legacy mode, which is transactional."""
    if getattr(dbapi_conn, "autocommit", False) is True:
        raise SessionStateError(
            "the connection is in AUTOCOMMIT mode (isolation_level='AUTOCOMMIT'), so every statement commits on "
            "its own: the events would survive a rollback of the business transaction and key order would not be "
            "kept. enqueue needs a real transaction: use an engine or connection without AUTOCOMMIT"
        )


@overload
def enqueue(target: SyncTarget, /, *events: Event) -> list[StoredEvent]: ...
@overload
def enqueue(target: AsyncTarget, /, *events: Event) -> Awaitable[list[StoredEvent]]: ...


def enqueue(
    target: SyncTarget | AsyncTarget, /, *events: Event
) -> list[StoredEvent] | Awaitable[list[StoredEvent]]:
    """Store ``events`` in the transaction of ``target`` (a Session, Connection, AsyncSession or
    AsyncConnection) and return what was stored, in argument order. Never commits.

    Raises an :class:`~outbox.errors.EventValidationError` (nothing written) for a bad event, also for an event
    id already in the outbox (then Postgres has aborted the transaction: roll it back),
    :class:`~outbox.errors.SessionStateError` when ``target`` has no active transaction or is in AUTOCOMMIT mode,
    and :class:`~outbox.errors.StoreError` when the database fails (:class:`~outbox.errors.DatabaseUnavailableError`
    when it cannot be reached). With an async target, await the result: a commit after an enqueue that was never
    awaited raises :class:`~outbox.errors.SessionStateError`.
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
    traceparent = current_traceparent()
    prepared = prepare(events, settings(), traceparent)  # the relay sends the traceparent: its size counts
    if isinstance(target, AsyncSession | AsyncConnection):
        if not prepared:
            return _nothing()
        return _write_async(target, prepared, traceparent, _expect_await(target))
    if not prepared:
        return []
    return _write(target, prepared, traceparent)


async def _nothing() -> list[StoredEvent]:
    return []


async def _write_async(
    target: AsyncTarget, prepared: Sequence[Prepared], traceparent: str | None, token: object
) -> list[StoredEvent]:
    _awaited(target, token)
    if isinstance(target, AsyncSession):
        return await target.run_sync(_write, prepared, traceparent)
    return await target.run_sync(_write, prepared, traceparent)


# ``outbox.enqueue(async_session, ...)`` without ``await`` builds a coroutine that never runs: its events are
# lost, and the business change would commit alone. Each call leaves a token here, under the sync Session or
# Connection and its root transaction; the coroutine takes it back when it starts, and a commit of that
# transaction with a token left is refused. The commit listener is added to that one Session/Connection on its
# first async enqueue (~15 µs, once): nothing is installed globally.
_Owner = Session | sa.Connection
# The transaction is held weakly too: it refers to its Session/Connection, which would then never be collected.
_pending: weakref.WeakKeyDictionary[_Owner, tuple[weakref.ref[Any], set[object]]] = weakref.WeakKeyDictionary()


def _owner(target: AsyncTarget) -> tuple[_Owner | None, Any]:
    """The sync Session/Connection behind ``target`` and its current root transaction."""
    sync: _Owner | None = target.sync_session if isinstance(target, AsyncSession) else target.sync_connection
    return sync, (sync.get_transaction() if sync is not None else None)


def _expect_await(target: AsyncTarget) -> object:
    token = object()
    sync, txn = _owner(target)
    if sync is None or txn is None:
        return token
    entry = _pending.get(sync)
    if entry is None:
        sa.event.listen(sync, "before_commit" if isinstance(sync, Session) else "commit", _refuse_unawaited)
    if entry is None or entry[0]() is not txn:  # a new transaction: tokens of an earlier one are moot
        entry = _pending[sync] = (weakref.ref(txn), set())
    entry[1].add(token)
    return token


def _awaited(target: AsyncTarget, token: object) -> None:
    sync = target.sync_session if isinstance(target, AsyncSession) else target.sync_connection
    entry = _pending.get(sync) if sync is not None else None
    if entry is not None:
        entry[1].discard(token)


def _refuse_unawaited(sync: _Owner) -> None:
    if isinstance(sync, Session) and sync.in_nested_transaction():
        return  # a savepoint: the coroutine may still be awaited before the real commit
    entry = _pending.get(sync)
    if entry is None or entry[0]() is not sync.get_transaction() or not entry[1]:
        return
    raise SessionStateError(
        f"{len(entry[1])} call(s) of outbox.enqueue on an async session or connection were never awaited, so "
        "their events were not written; the commit is refused so that the business change does not commit "
        "without them. Write `await outbox.enqueue(...)`, then roll back and retry"
    )
