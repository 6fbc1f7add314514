"""OutboxMixin + install() with a sync Session: auto-events, explicit events, one transaction, no global hook."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

import outbox
from outbox import testing
from outbox.errors import PayloadError, SessionStateError
from outbox.orm import installed
from tests.integration.write.models import Base, Customer, Note, Order


@pytest.fixture
def shop(connection: sa.Connection) -> Iterator[sa.Connection]:
    connection.execute(sa.text("CREATE SCHEMA IF NOT EXISTS shop"))
    Base.metadata.create_all(connection)
    yield connection


@pytest.fixture
def s(shop: sa.Connection) -> Iterator[Session]:
    maker = sessionmaker(bind=shop, join_transaction_mode="create_savepoint", expire_on_commit=False)
    outbox.install(maker)
    with maker() as session:
        yield session


def test_insert_update_delete_emit_auto_events(s: Session) -> None:
    with s.begin():
        order = Order(customer="ann", total=Decimal("9.50"))
        s.add(order)
    [created] = testing.pending_events(s, topic="orders")
    assert created.type == "order.created" and created.key == str(order.id).encode() and created.key_seq == 1
    assert json.loads(created.payload) == {"id": order.id, "customer": "ann", "total": "9.50"}
    with s.begin():
        order.total = Decimal("11.00")
    with s.begin():
        s.delete(order)
    types = [e.type for e in testing.pending_events(s, topic="orders")]
    assert types == ["order.created", "order.updated", "order.deleted"]
    testing.assert_enqueued(s, type="order.updated", key=str(order.id), count=1)
    assert [e.key_seq for e in testing.pending_events(s, key=str(order.id))] == [1, 2, 3]


def test_no_event_when_nothing_changed(s: Session) -> None:
    with s.begin():
        order = Order(customer="bob", total=Decimal(1))
        s.add(order)
    with s.begin():
        order.total = Decimal(1)  # same value: is_modified is False
        s.add(Note(text="unrelated"))
    testing.assert_enqueued(s, type="order.updated", count=0)
    testing.assert_enqueued(s, topic="orders", count=1)


def test_explicit_event_without_column_change_still_flushes(s: Session) -> None:
    with s.begin():
        c = Customer(email="c@example.com")
        s.add(c)
    with s.begin():
        ev = c.record_event(type="customer.welcomed", data={"channel": "mail"}, key="c@example.com")
    [stored] = testing.pending_events(s, type="customer.welcomed")
    assert stored.event_id == ev.id and stored.topic == "customers" and stored.key == b"c@example.com"


def test_explicit_events_follow_the_auto_event_in_recorded_order(s: Session) -> None:
    with s.begin():
        order = Order(customer="cy", total=Decimal(3))
        s.add(order)
        order.record_event(type="order.noted", data={"n": 1})
        order.record_event(type="order.noted", data={"n": 2}, topic="audit", key=None)
    assert [e.type for e in testing.pending_events(s)] == ["order.created", "order.noted", "order.noted"]
    [audit] = testing.pending_events(s, topic="audit")
    assert audit.key is None and audit.key_seq is None
    # the explicit event's default key is the primary key, assigned by the database during the same flush
    testing.assert_enqueued(s, type="order.noted", key=str(order.id), data={"n": 1}, count=1)


def test_default_payload_is_the_columns(s: Session) -> None:
    with s.begin():
        c = Customer(email="d@example.com")
        s.add(c)
    with s.begin():
        s.delete(c)
    [removed] = testing.pending_events(s, type="customer.removed")
    assert json.loads(removed.payload) == {"id": c.id, "email": "d@example.com"}
    assert removed.key == b"d@example.com"


def test_rollback_discards_events(s: Session) -> None:
    s.begin()
    s.add(Order(customer="dee", total=Decimal(1)))
    s.flush()
    testing.assert_enqueued(s, type="order.created", count=1)
    s.rollback()
    with s.begin():
        testing.assert_enqueued(s, type="order.created", count=0)


def test_bad_explicit_event_fails_where_it_is_recorded(s: Session) -> None:
    with s.begin():
        order = Order(customer="eve", total=Decimal(1))
        s.add(order)
        with pytest.raises(PayloadError, match="NaN"):
            order.record_event(type="x", data=float("nan"))
            s.flush()


def test_hook_is_not_global(shop: sa.Connection) -> None:
    plain = Session(bind=shop, join_transaction_mode="create_savepoint", expire_on_commit=False)
    assert not installed(plain)
    with plain.begin():
        order = Order(customer="fay", total=Decimal(1))
        plain.add(order)
        plain.flush()
        with pytest.raises(SessionStateError, match=r"outbox.install\(\)"):
            order.record_event(type="x")
    with plain.begin():
        testing.assert_enqueued(plain, count=0)
    outbox.install(plain)
    outbox.install(plain)  # idempotent
    assert installed(plain)
    with plain.begin():
        plain.add(Order(customer="gus", total=Decimal(1)))
    testing.assert_enqueued(plain, type="order.created", count=1)
    plain.close()
