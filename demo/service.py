"""The sample order service: ORM models with outbox events, written synchronously and asynchronously."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

import outbox
from outbox import AutoEvents, OutboxMixin

PER_TXN = 10  # orders per business transaction


class Base(DeclarativeBase):
    pass


class Order(Base, OutboxMixin):
    """Inserting an order writes ``order.created`` on topic ``orders`` in the same transaction."""

    __tablename__ = "demo_order"
    __table_args__ = {"schema": "public"}
    __outbox__ = AutoEvents(topic="orders", on_insert="order.created", key=lambda o: o.customer,
                            data=lambda o: {"id": o.id, "customer": o.customer, "total": str(o.total)})

    id: Mapped[int] = mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    customer: Mapped[str] = mapped_column(sa.Text)
    total: Mapped[Decimal] = mapped_column(sa.Numeric(10, 2))
    channel: Mapped[str] = mapped_column(sa.Text)


def create_tables(url: str) -> None:
    engine = sa.create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()


def _order(rnd: random.Random, channel: str) -> Order:
    o = Order(customer=f"customer-{rnd.randrange(200)}", total=Decimal(rnd.randrange(500, 50000)) / 100,
              channel=channel)
    # an explicit event beside the automatic one, keyed like it: the payment of this order
    o.record_event(type="payment.captured", topic="payments", data={"amount": str(o.total)}, key=o.customer)
    return o


def write_sync(url: str, orders: int, seed: int = 1) -> None:
    """``orders`` orders through a plain ``Session``, ``PER_TXN`` per transaction."""
    engine = sa.create_engine(url, pool_size=2)
    make = sessionmaker(engine)
    outbox.install(make)
    rnd = random.Random(seed)
    for start in range(0, orders, PER_TXN):
        with make.begin() as s:
            s.add_all(_order(rnd, "web") for _ in range(min(PER_TXN, orders - start)))
    engine.dispose()


async def _write_async(url: str, orders: int, writers: int, seed: int) -> None:
    engine = create_async_engine(url, pool_size=writers)
    make = async_sessionmaker(engine, expire_on_commit=False)
    outbox.install(make)

    async def writer(w: int, n: int) -> None:
        rnd = random.Random(seed * 100 + w)
        for start in range(0, n, PER_TXN):
            async with make.begin() as s:
                s.add_all(_order(rnd, "mobile") for _ in range(min(PER_TXN, n - start)))

    shares = [orders // writers + (1 if w < orders % writers else 0) for w in range(writers)]
    await asyncio.gather(*(writer(w, n) for w, n in enumerate(shares)))
    await engine.dispose()


def write_async(url: str, orders: int, writers: int = 4, seed: int = 2) -> None:
    """``orders`` orders through ``AsyncSession`` writers running concurrently."""
    asyncio.run(_write_async(url, orders, writers, seed))
