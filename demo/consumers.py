"""The two consumer groups of the demo, each acknowledging into (and acting on) its own database."""

from __future__ import annotations

import threading
from collections.abc import Callable

import sqlalchemy as sa

from outbox.inbox import Inbox, ReceivedEvent

GROUPS: dict[str, tuple[str, ...]] = {"billing": ("orders", "payments"), "shipping": ("orders",)}
EFFECTS = {
    "billing": "CREATE TABLE IF NOT EXISTS public.invoice_line (event_id uuid PRIMARY KEY, kind text NOT NULL)",
    "shipping": "CREATE TABLE IF NOT EXISTS public.shipment (event_id uuid PRIMARY KEY, customer text NOT NULL)",
}


def _billing(conn: sa.Connection, ev: ReceivedEvent) -> None:
    conn.execute(sa.text("INSERT INTO public.invoice_line (event_id, kind) VALUES (:e, :k)"),
                 {"e": ev.event_id, "k": ev.type})


def _shipping(conn: sa.Connection, ev: ReceivedEvent) -> None:
    conn.execute(sa.text("INSERT INTO public.shipment (event_id, customer) VALUES (:e, :c)"),
                 {"e": ev.event_id, "c": ev.json()["customer"]})


HANDLERS: dict[str, Callable[[sa.Connection, ReceivedEvent], None]] = {"billing": _billing, "shipping": _shipping}


class Consumers:
    """Both groups, ``members`` consumers each (threads running ``Inbox.run`` until :meth:`stop`).

    Each record is its own durable transaction, so one member is bounded by the disk's commit latency; several
    members of a group share the partitions and their commits overlap (Postgres group commit)."""

    def __init__(self, urls: dict[str, str], bootstrap: str, members: int = 2) -> None:
        self.members = members
        self.engines = {g: sa.create_engine(u, pool_size=members + 1) for g, u in urls.items()}
        for g, eng in self.engines.items():
            with eng.begin() as c:
                c.execute(sa.text(EFFECTS[g]))
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=Inbox(self.engines[g], g, list(topics), HANDLERS[g], bootstrap=bootstrap,
                                          max_batch=500).run, args=(self.stop_event,), name=f"inbox-{g}-{m}")
            for g, topics in GROUPS.items() for m in range(members)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def acknowledged(self) -> dict[str, int]:
        out = {}
        for g, eng in self.engines.items():
            with eng.connect() as c:
                out[g] = int(c.execute(sa.text("SELECT count(*) FROM outbox.inbox WHERE consumer_group = :g"),
                                       {"g": g}).scalar_one())
        return out

    def pace(self) -> dict[str, float]:
        """Events each group committed per second, from its first acknowledgement to its last."""
        out = {}
        for g, eng in self.engines.items():
            with eng.connect() as c:
                n, span = c.execute(sa.text(
                    "SELECT count(*), extract(epoch FROM max(received_at) - min(received_at)) FROM outbox.inbox "
                    "WHERE consumer_group = :g"), {"g": g}).one()
            out[g] = int(n) / float(span) if span else 0.0
        return out

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        for eng in self.engines.values():
            eng.dispose()
