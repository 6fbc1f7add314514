"""The same hook and enqueue through AsyncSession / AsyncConnection, and a FastAPI-style app (commits: fresh_db)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
import sqlalchemy as sa
from fastapi import Depends, FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

import outbox
from outbox import testing
from outbox.errors import SessionStateError
from tests.integration.write.models import Base, Order


@pytest.fixture
def shop_url(fresh_db: str) -> Iterator[str]:
    eng = sa.create_engine(fresh_db)
    with eng.begin() as c:
        c.execute(sa.text("CREATE SCHEMA shop"))
        Base.metadata.create_all(c)
    eng.dispose()
    yield fresh_db


def _pending(url: str, **kw: object) -> list[testing.PendingEvent]:
    eng = sa.create_engine(url)
    try:
        with eng.connect() as c:
            return testing.pending_events(c, **kw)  # type: ignore[arg-type]
    finally:
        eng.dispose()


def test_async_sessionmaker_auto_and_explicit_events(shop_url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(shop_url)
        maker = async_sessionmaker(engine, expire_on_commit=False)
        outbox.install(maker)
        outbox.install(maker)  # idempotent
        async with maker() as s, s.begin():
            order = Order(customer="ann", total=Decimal("4.20"))
            s.add(order)
            await s.flush()
            order.record_event(type="order.noted", data={"gift": True})
            [stored] = await outbox.enqueue(s, outbox.Event(topic="audit", type="audit.seen", data={}))
            assert stored.key is None
        async with maker() as s, s.begin():
            await s.delete(order)
        async with maker() as s:
            assert await s.run_sync(lambda ss: len(testing.pending_events(ss))) == 4
        await engine.dispose()

    asyncio.run(run())
    types = [(e.topic, e.type) for e in _pending(shop_url)]
    # enqueue writes at once; record_event waits for the next flush (here, the commit)
    assert types == [("orders", "order.created"), ("audit", "audit.seen"), ("orders", "order.noted"),
                     ("orders", "order.deleted")]
    assert [e.key_seq for e in _pending(shop_url, topic="orders")] == [1, 2, 3]


def test_install_on_one_async_session_and_async_connection(shop_url: str) -> None:
    async def run() -> None:
        engine = create_async_engine(shop_url)
        async with AsyncSession(engine) as s:
            outbox.install(s)
            async with s.begin():
                s.add(Order(customer="bo", total=Decimal(1)))
        async with AsyncSession(engine) as other, other.begin():
            other.add(Order(customer="cy", total=Decimal(1)))  # no hook on this one: no event
        async with engine.connect() as conn:
            with pytest.raises(SessionStateError):
                await outbox.enqueue(conn, outbox.Event(topic="t", type="x"))
            async with conn.begin():
                [st] = await outbox.enqueue(conn, outbox.Event(topic="t", type="x", key="k"))
                assert st.key_seq == 1
        await engine.dispose()

    asyncio.run(run())
    assert [e.data["customer"] for e in _pending(shop_url, type="order.created")] == ["bo"]
    assert len(_pending(shop_url, topic="t")) == 1


def test_fastapi_style_app(shop_url: str) -> None:
    """README example: a FastAPI endpoint whose order and event commit together."""
    engine = create_async_engine(shop_url)
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    outbox.install(SessionLocal)
    app = FastAPI()

    async def db() -> AsyncIterator[AsyncSession]:
        async with SessionLocal() as session:
            yield session

    @app.post("/orders")
    async def create_order(body: dict[str, str], session: AsyncSession = Depends(db)) -> dict[str, int]:  # noqa: B008
        async with session.begin():
            order = Order(customer=body["customer"], total=Decimal(body["total"]))
            session.add(order)
        return {"id": order.id}

    def charge(order: Order) -> None:
        raise RuntimeError(f"payment declined for order {order.id}")

    @app.post("/orders/{order_id}/fail")
    async def fail(order_id: int, session: AsyncSession = Depends(db)) -> dict[str, str]:  # noqa: B008
        try:
            async with session.begin():
                order = await session.get(Order, order_id)
                assert order is not None
                order.total = Decimal(0)
                await session.flush()
                charge(order)
        except RuntimeError as exc:
            return {"error": str(exc)}
        return {"error": ""}

    async def run() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            r = await client.post("/orders", json={"customer": "dee", "total": "12.50"})
            assert r.status_code == 200, r.text
            oid = r.json()["id"]
            r = await client.post(f"/orders/{oid}/fail")
            assert r.json() == {"error": f"payment declined for order {oid}"}
        await engine.dispose()
        return int(oid)

    oid = asyncio.run(run())
    [created] = _pending(shop_url, topic="orders")
    assert created.type == "order.created" and created.key == str(oid).encode()
    assert json.loads(created.payload) == {"id": oid, "customer": "dee", "total": "12.50"}
