"""kafka-outbox: write events in your business transaction; the relay publishes them exactly once.

::

    with Session(engine) as session, session.begin():
        session.add(order)
        outbox.enqueue(session, outbox.Event(topic="orders", type="order.created", key=order.ref, data={...}))

``outbox.__version__`` is the installed version (:mod:`outbox.version`). This core needs only SQLAlchemy,
psycopg, Alembic and uuid-utils; the relay, the inbox and the reconciler come with extras (:mod:`outbox.extras`).
"""

from outbox import errors, testing
from outbox.config import Settings, configure, settings
from outbox.event import Event, StoredEvent, shard_for
from outbox.orm import AutoEvents, OutboxMixin, install
from outbox.registry import JsonSchemaRegistry
from outbox.version import VERSION
from outbox.write import enqueue

__version__ = VERSION

__all__ = [
    "AutoEvents",
    "Event",
    "JsonSchemaRegistry",
    "OutboxMixin",
    "Settings",
    "StoredEvent",
    "configure",
    "enqueue",
    "errors",
    "install",
    "settings",
    "shard_for",
    "testing",
]
