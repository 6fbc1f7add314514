"""Sample host models used by the ORM tests (a host app's own tables, next to ours)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import MetaData, Numeric, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outbox.orm import AutoEvents, OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(schema="shop")


class Order(Base, OutboxMixin):
    __tablename__ = "orders"
    __outbox__ = AutoEvents(
        topic="orders",
        on_insert="order.created",
        on_update="order.updated",
        on_delete="order.deleted",
        data=lambda o: {"id": o.id, "customer": o.customer, "total": str(o.total)},
    )

    id: Mapped[int] = mapped_column(primary_key=True)  # database-generated: known only after the INSERT
    customer: Mapped[str] = mapped_column(String(50))
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Customer(Base, OutboxMixin):
    """Only explicit events, and the default column payload for deletes."""

    __tablename__ = "customers"
    __outbox__ = AutoEvents(topic="customers", on_delete="customer.removed", key=lambda c: c.email)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))


class Note(Base):
    """Not an outbox model: never produces events."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))
