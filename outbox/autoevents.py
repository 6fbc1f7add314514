"""What a model emits by itself: the :class:`AutoEvents` spec and its default key and payload builders.

Used by :mod:`outbox.orm`, which decides *when* events are built (in the flush) and writes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import inspect as sa_inspect

from outbox.event import Event


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


def default_key(obj: Any) -> str | bytes | None:
    spec = type_spec(obj)
    return spec.key(obj) if spec is not None and spec.key is not None else primary_key(obj)


def type_spec(obj: Any) -> AutoEvents | None:
    spec = getattr(type(obj), "__outbox__", None)
    return spec if isinstance(spec, AutoEvents) else None


def auto_event(obj: Any, op: Operation) -> Event | None:
    spec = type_spec(obj)
    etype = spec.type_for(op) if spec else None
    if spec is None or etype is None:
        return None
    return Event(
        topic=spec.topic,
        type=etype,
        key=default_key(obj),
        data=spec.data(obj) if spec.data else column_data(obj),
        subject=spec.subject(obj) if spec.subject else None,
    )
