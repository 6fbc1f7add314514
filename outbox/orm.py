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

How the hook works (docs/decisions/002-orm-hook.md): ``before_flush`` drains the session, taking the explicit
events queued on instances and noting which instances are inserted, updated (``is_modified``) or deleted.
``after_flush``, still inside the flush and the transaction, builds the auto-events (database-generated primary
keys are known by then) and writes everything with one :func:`outbox.enqueue` call. No SQL runs after commit.
The hook is installed only where you ask; ``AsyncSession`` is covered through the sync session it wraps.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Literal

from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, object_session, sessionmaker
from sqlalchemy.orm.attributes import flag_dirty

from outbox.errors import SessionStateError
from outbox.event import Event
from outbox.write import enqueue


class Operation(Enum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class AutoEvents:
    """Which events a model emits by itself, per operation, and how to build them.

    ``key`` defaults to the primary key (``str``, ``:``-joined when composite), ``data`` to the mapped column
    values (dates, UUIDs, decimals and enums as strings). A ``None`` type means no event for that operation.
    """

    topic: str
    on_insert: str | None = None
    on_update: str | None = None
    on_delete: str | None = None
    key: Callable[[Any], str | bytes | None] | None = None
    data: Callable[[Any], Any] | None = None
    subject: Callable[[Any], str | None] | None = None

    def type_for(self, op: Operation) -> str | None:
        return {Operation.INSERT: self.on_insert, Operation.UPDATE: self.on_update,
                Operation.DELETE: self.on_delete}[op]


def primary_key(obj: Any) -> str | None:
    ident = sa_inspect(obj).mapper.primary_key_from_instance(obj)
    if any(v is None for v in ident):
        return None
    return ":".join(str(v) for v in ident)


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, uuid.UUID | Decimal):
        return str(v)
    if isinstance(v, Enum):
        return v.value
    return v


def column_data(obj: Any) -> dict[str, Any]:
    """The mapped column attributes of ``obj`` as a JSON-friendly dict (the default auto-event payload)."""
    mapper = sa_inspect(obj).mapper
    return {a.key: _jsonable(getattr(obj, a.key)) for a in mapper.column_attrs}


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
        checked now, so a bad one fails here.
        """
        spec = type_spec(self)
        if topic is None:
            if spec is None:
                raise SessionStateError(f"{self.__class__.__name__}.record_event needs topic= (no __outbox__ spec)")
            topic = spec.topic
        deferred = key is _Default.KEY
        if key is _Default.KEY:
            key = _default_key(self)
        ev = Event(topic=topic, type=type, data=data, key=key, **attributes)
        session = object_session(self)
        if session is not None and not installed(session):
            raise SessionStateError(
                "this session has no outbox hook, so the event would be lost: call outbox.install() on the "
                "sessionmaker or session first"
            )
        self.__dict__.setdefault(_PENDING, []).append((next(_order), _Explicit(ev, deferred)))
        flag_dirty(self)  # a flush must happen even when no column changed
        return ev


@dataclass(frozen=True)
class _Explicit:
    event: Event
    # The key defaults to the primary key, which the database may assign only during the flush: resolve it then.
    key_at_flush: bool


def _default_key(obj: Any) -> str | bytes | None:
    spec = type_spec(obj)
    return spec.key(obj) if spec is not None and spec.key is not None else primary_key(obj)


def type_spec(obj: Any) -> AutoEvents | None:
    spec = getattr(type(obj), "__outbox__", None)
    return spec if isinstance(spec, AutoEvents) else None


def _auto_event(obj: Any, op: Operation) -> Event | None:
    spec = type_spec(obj)
    etype = spec.type_for(op) if spec else None
    if spec is None or etype is None:
        return None
    return Event(
        topic=spec.topic,
        type=etype,
        key=_default_key(obj),
        data=spec.data(obj) if spec.data else column_data(obj),
        subject=spec.subject(obj) if spec.subject else None,
    )


def _before_flush(session: Session, _ctx: Any, _instances: Any) -> None:
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
                ev = replace(what.event, key=_default_key(obj))
        else:
            ev = _auto_event(obj, what)
        if ev is not None:
            events.append(ev)
    enqueue(session, *events)


def _discard(session: Session, *_args: Any) -> None:
    session.info.pop(_INFO, None)


_HOOKS: tuple[tuple[str, Callable[..., None]], ...] = (
    ("before_flush", _before_flush),
    ("after_flush", _after_flush),
    ("after_soft_rollback", _discard),
)


def install(target: Session | sessionmaker[Any] | AsyncSession | async_sessionmaker[Any]) -> None:
    """Install the outbox flush hook on one session or sessionmaker (sync or async). Idempotent; never global."""
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
        raise TypeError(f"install() takes a Session, sessionmaker, AsyncSession or async_sessionmaker, "
                        f"got {type(target).__name__}")


_MARK = "_outbox_hook_installed"


def _listen(target: Any) -> None:
    for name, fn in _HOOKS:
        sa_event.listen(target, name, fn)


def installed(session: Session | AsyncSession) -> bool:
    """Whether the outbox hook is active for ``session`` (installed on it, its sessionmaker or its class)."""
    s = session.sync_session if isinstance(session, AsyncSession) else session
    # The dispatch collection holds listeners of the session, its sessionmaker and its classes alike.
    return _before_flush in s.dispatch.before_flush
