"""The SQLAlchemy ORM integration: ``OutboxMixin`` for models and an explicit per-session(maker) hook.

::

    class Order(Base, OutboxMixin):
        __tablename__ = "orders"
        __outbox__ = AutoEvents(topic="orders", on_insert="order.created", on_update="order.updated",
                                on_delete="order.deleted", data=lambda o: {"id": o.id, "total": o.total})

    SessionLocal = sessionmaker(engine)
    outbox.install(SessionLocal)          # or a Session, an AsyncSession, an async_sessionmaker

    with SessionLocal.begin() as s:
        order = Order(total=10)
        s.add(order)                      # order.created is written with the INSERT, in the same transaction
        order.record_event(type="order.noted", data={"note": "gift"})   # an explicit event

How the hook works (docs/decisions/002-orm-hook-before-and-after-flush.md): ``before_flush`` drains the session,
taking the explicit events queued on instances and noting which instances are inserted, updated
(``is_modified``) or deleted.
``after_flush``, still inside the flush and the transaction, builds the auto-events (database-generated primary
keys are known by then) and writes everything with one :func:`outbox.enqueue` call. No SQL runs after commit.
The hook is installed only where you ask; ``AsyncSession`` is covered through the sync session it wraps.

A recorded event is written or refused, never dropped in silence: flushing an instance that holds one in a session
without the hook raises :class:`~outbox.errors.SessionStateError` (a mapper event on ``OutboxMixin`` itself, so
other models and sessions are untouched), and a hooked session refuses to flush or commit while such an instance
has left it (``expunge``). A rollback discards the events of instances it expires; an instance that never reaches
a session is garbage like any other object.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, ClassVar, Literal

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction, object_session, sessionmaker
from sqlalchemy.orm.attributes import flag_dirty

from outbox.autoevents import (
    AutoEvents,
    Operation,
    auto_event,
    column_data,
    default_key,
    primary_key,
    type_spec,
)
from outbox.errors import SessionStateError
from outbox.event import Event
from outbox.write import enqueue

__all__ = ["AutoEvents", "Operation", "OutboxMixin", "column_data", "install", "installed", "primary_key", "type_spec"]


class _Default(Enum):
    KEY = "key"


_order = itertools.count()
_PENDING = "_outbox_pending"
_INFO = "outbox.ops"


class OutboxMixin:
    """Adds :meth:`record_event` and, with a class-level ``__outbox__ = AutoEvents(...)``, auto-events."""

    __outbox__: ClassVar[AutoEvents | None] = None

    def record_event(
        self,
        *,
        type: str,
        data: Any = None,
        key: str | bytes | Literal[_Default.KEY] | None = _Default.KEY,
        topic: str | None = None,
        **attributes: Any,
    ) -> Event:
        """Queue an event to be written with this instance's next flush (same transaction); returns it.

        ``topic`` defaults to ``__outbox__.topic``; ``key`` to the auto-event key (the primary key by default).
        Other :class:`~outbox.Event` fields (``subject``, ``headers``, ``id``, ...) pass through. The event is
        checked now, so a bad one fails here. The default key is resolved at flush; the returned event carries it
        only when the instance already has an identity (``None`` before). Raises
        :class:`~outbox.errors.SessionStateError` when the instance's session has no outbox hook.
        """
        spec = type_spec(self)
        if topic is None:
            if spec is None:
                raise SessionStateError(f"{self.__class__.__name__}.record_event needs topic= (no __outbox__ spec)")
            topic = spec.topic
        session = object_session(self)
        if session is not None and not installed(session):
            raise SessionStateError(_no_hook(self))
        deferred = key is _Default.KEY
        if key is _Default.KEY:
            # The default key is resolved again at flush (ADR 002). Before the instance has an identity, its
            # primary key may not exist yet and a key builder may read attributes set later, so only a
            # persistent instance's key is computed now (then a broken builder fails here, not at commit).
            key = default_key(self) if sa_inspect(self).has_identity else None
        ev = Event(topic=topic, type=type, data=data, key=key, **attributes)
        self.__dict__.setdefault(_PENDING, []).append((next(_order), _Explicit(ev, deferred)))
        flag_dirty(self)  # a flush must happen even when no column changed (this also begins the transaction)
        if session is not None:
            _track(session, self)
        return ev


@dataclass(frozen=True)
class _Explicit:
    event: Event
    # The key defaults to the primary key, which the database may assign only during the flush: resolve it then.
    key_at_flush: bool


def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
    _refuse_lost(session)
    # Sort keys: within one flush, auto-events first (inserts, updates, deletes), then explicit events in the
    # order they were recorded.
    ops: list[tuple[tuple[int, int], Operation | _Explicit, Any]] = session.info.setdefault(_INFO, [])
    for op, objs in ((Operation.INSERT, session.new), (Operation.UPDATE, session.dirty),
                     (Operation.DELETE, session.deleted)):
        for obj in objs:
            if not isinstance(obj, OutboxMixin):
                continue
            ops.extend(((1, n), ex, obj) for n, ex in obj.__dict__.pop(_PENDING, ()))
            if op is Operation.UPDATE and not session.is_modified(obj, include_collections=False):
                continue
            if type_spec(obj) is not None:
                ops.append(((0, next(_order)), op, obj))


def _after_flush(session: Session, _ctx: Any) -> None:
    ops = session.info.pop(_INFO, None)
    if not ops:
        return
    events: list[Event] = []
    for _n, what, obj in sorted(ops, key=lambda o: o[0]):
        if isinstance(what, _Explicit):
            ev: Event | None = what.event
            if what.key_at_flush:
                ev = replace(what.event, key=default_key(obj))
        else:
            ev = auto_event(obj, what)
        if ev is not None:
            events.append(ev)
    enqueue(session, *events)


def _discard(session: Session, *_args: Any) -> None:
    session.info.pop(_INFO, None)


# Explicit events can be lost without any flush seeing them: the instance leaves the session (expunge, expunge_all)
# before the flush that would drain it. A hooked session therefore keeps the instances that hold recorded events
# (with the transaction they were recorded in) and refuses to flush or commit while one of them is outside it.
_RECORDED = "outbox.recorded"


def _track(session: Session, obj: Any) -> None:
    txn = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_RECORDED, {})[id(obj)] = (obj, txn)


def _attached(session: Session, obj: Any) -> None:
    if _PENDING in getattr(obj, "__dict__", ()):  # recorded while transient or detached, then added
        _track(session, obj)


def _refuse_lost(session: Session, *_args: Any) -> None:
    recorded: dict[int, tuple[Any, Any]] = session.info.get(_RECORDED) or {}
    for k, (obj, _txn) in list(recorded.items()):
        if _PENDING not in obj.__dict__:
            del recorded[k]  # written by a flush
        elif object_session(obj) is not session:
            types = ", ".join(repr(ex.event.type) for _n, ex in obj.__dict__[_PENDING])
            raise SessionStateError(
                f"event(s) {types} recorded on a {type(obj).__name__} would be lost: the instance left the session "
                "(expunge/expunge_all) before a flush wrote them; flush before expunging, add the instance back, "
                "or roll back to discard them"
            )


def _transaction_ended(session: Session, txn: SessionTransaction) -> None:
    if txn.parent is not None and not txn.nested:
        return  # the inner transaction of a flush
    recorded: dict[int, tuple[Any, Any]] = session.info.get(_RECORDED) or {}
    for k, (obj, tagged) in list(recorded.items()):
        if txn.parent is None or tagged is txn:
            del recorded[k]
            # After a commit nothing is left here; after a rollback (or close), an instance that stays persistent
            # has its changes expired, and its unwritten events go with them rather than ride along with a later,
            # unrelated flush. An instance made transient again keeps them, as SQLAlchemy keeps its attributes.
            if sa_inspect(obj).has_identity and object_session(obj) in (session, None):
                obj.__dict__.pop(_PENDING, None)


_HOOKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("before_flush", _before_flush),
    ("after_flush", _after_flush),
    ("after_soft_rollback", _discard),
    ("after_attach", _attached),
    ("before_commit", _refuse_lost),
    ("after_transaction_end", _transaction_ended),
)


def _no_hook(obj: Any) -> str:
    return (
        f"an event recorded on a {type(obj).__name__} would be lost: its session has no outbox hook; call "
        "outbox.install() on that sessionmaker (or session, async_sessionmaker, AsyncSession) before using it"
    )


def _refuse_unhooked_flush(_mapper: Any, _conn: Any, obj: Any) -> None:
    # record_event checks the session it sees, but an instance recorded on while transient can be added to a
    # session without the hook later; that flush would write the row and drop the event. A hooked session has
    # drained the events in before_flush, so anything still queued here is about to be lost. (A mapper event on
    # our own mixin, not a session event: sessions without the hook are not touched otherwise.)
    if _PENDING in obj.__dict__:
        session = object_session(obj)
        if session is None or not installed(session):
            raise SessionStateError(_no_hook(obj))


for _name in ("before_insert", "before_update", "before_delete"):
    sa_event.listen(OutboxMixin, _name, _refuse_unhooked_flush, propagate=True)


Installable = Session | sessionmaker[Any] | AsyncSession | async_sessionmaker[Any]


def install(target: Installable) -> None:
    """Install the outbox flush hook on one session or sessionmaker (sync or async). Idempotent; never global.

    Anything else (an Engine, a Session class, None) raises :class:`~outbox.errors.SessionStateError`.
    """
    if isinstance(target, AsyncSession):
        target = target.sync_session
    if isinstance(target, Session):
        if not installed(target):
            _listen(target)
    elif isinstance(target, sessionmaker):
        # sessionmaker builds its own Session subclass; mark that class. (event.contains() is keyed by id() and
        # can answer for a garbage-collected maker whose id was reused, so it is not used to decide.)
        if not target.class_.__dict__.get(_MARK):
            _listen(target)
            setattr(target.class_, _MARK, True)
    elif isinstance(target, async_sessionmaker):
        base = target.kw.get("sync_session_class") or target.class_.sync_session_class
        if not base.__dict__.get(_MARK):
            base = type(f"Outbox{base.__name__}", (base,), {_MARK: True})
            _listen(base)
            target.configure(sync_session_class=base)
    else:
        what = f"the class {target.__name__}" if isinstance(target, type) else type(target).__name__
        raise SessionStateError(
            f"install() takes a Session, sessionmaker, AsyncSession or async_sessionmaker instance, got {what}; "
            "e.g. outbox.install(sessionmaker(engine)) (installing on a class would make the hook global)"
        )


_MARK = "_outbox_hook_installed"


def _listen(target: Any) -> None:
    for name, fn in _HOOKS:
        sa_event.listen(target, name, fn)


def installed(session: Session | AsyncSession) -> bool:
    """Whether the outbox hook is active for ``session`` (installed on it, its sessionmaker or its class)."""
    s = session.sync_session if isinstance(session, AsyncSession) else session
    # The dispatch collection holds listeners of the session, its sessionmaker and its classes alike.
    return _before_flush in s.dispatch.before_flush
