"""A recorded event is written or refused, never dropped in silence (docs/decisions/002), and a key builder is
not run before the instance can answer it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

import outbox
from outbox import testing
from outbox.errors import SessionStateError
from outbox.orm import AutoEvents, OutboxMixin


class Base(DeclarativeBase):
    metadata = MetaData(schema="lost_shop")


class Parcel(Base, OutboxMixin):
    __tablename__ = "parcels"
    # The key builder reads an attribute that may be set only after record_event (not yet on a transient object).
    __outbox__ = AutoEvents(topic="parcels", on_insert="parcel.created", key=lambda p: p.ref.upper())

    id: Mapped[int] = mapped_column(primary_key=True)
    ref: Mapped[str | None] = mapped_column(String(20), nullable=True)


@pytest.fixture
def shop(connection: sa.Connection) -> Iterator[sa.Connection]:
    connection.execute(sa.text("CREATE SCHEMA IF NOT EXISTS lost_shop"))
    Base.metadata.create_all(connection)
    yield connection


@pytest.fixture
def hooked(shop: sa.Connection) -> Iterator[Session]:
    maker = sessionmaker(bind=shop, join_transaction_mode="create_savepoint", expire_on_commit=False)
    outbox.install(maker)
    with maker() as session:
        yield session


@pytest.fixture
def plain(shop: sa.Connection) -> Iterator[Session]:
    with Session(bind=shop, join_transaction_mode="create_savepoint", expire_on_commit=False) as session:
        yield session


def _parcels(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM lost_shop.parcels")).scalar_one())


def test_event_recorded_while_transient_is_refused_by_a_session_without_the_hook(
    plain: Session, shop: sa.Connection
) -> None:
    p = Parcel(ref="a1")
    p.record_event(type="parcel.noted")  # no session yet: nothing to check here
    plain.add(p)
    with pytest.raises(SessionStateError, match=r"would be lost.*outbox\.install\(\)"):
        plain.commit()  # the INSERT would commit and the event vanish
    plain.rollback()
    assert _parcels(shop) == 0
    testing.assert_enqueued(shop, count=0)


def test_same_refusal_on_update_and_delete_flushes(plain: Session, shop: sa.Connection) -> None:
    with plain.begin():
        p = Parcel(ref="b1")
        plain.add(p)
    plain.expunge(p)
    p.record_event(type="parcel.noted")  # detached: no session to check
    plain.add(p)
    with pytest.raises(SessionStateError, match="no outbox hook"):
        plain.flush()
    plain.rollback()
    plain.add(p)
    plain.delete(p)
    with pytest.raises(SessionStateError, match="no outbox hook"):
        plain.flush()
    plain.rollback()


def test_models_without_recorded_events_still_flush_without_the_hook(plain: Session, shop: sa.Connection) -> None:
    with plain.begin():
        plain.add(Parcel(ref="c1"))  # the hook is not global: no event, no error
    assert _parcels(shop) == 1
    testing.assert_enqueued(shop, count=0)


def test_expunge_after_record_event_refuses_the_commit(hooked: Session) -> None:
    with hooked.begin():
        p = Parcel(ref="d1")
        hooked.add(p)
    with pytest.raises(SessionStateError, match=r"'parcel\.noted'.*left the session"), hooked.begin():
        p.record_event(type="parcel.noted")
        hooked.expunge(p)  # the session is clean now: commit would not even flush
    with hooked.begin():
        testing.assert_enqueued(hooked, type="parcel.noted", count=0)


def test_expunge_of_a_new_instance_refuses_the_next_flush(hooked: Session) -> None:
    hooked.begin()
    p = Parcel(ref="e1")
    hooked.add(p)
    p.record_event(type="parcel.noted")
    hooked.expunge(p)
    hooked.add(Parcel(ref="e2"))
    with pytest.raises(SessionStateError, match="left the session"):
        hooked.flush()
    # Nothing was lost yet: adding the instance back writes its event with the next flush.
    hooked.add(p)
    hooked.commit()
    with hooked.begin():
        testing.assert_enqueued(hooked, type="parcel.noted", key="E1", count=1)


def test_event_recorded_while_transient_is_written_when_added_to_a_hooked_session(hooked: Session) -> None:
    p = Parcel()
    ev = p.record_event(type="parcel.noted", data={"n": 1})  # ref is still None: the key builder cannot run yet
    assert ev.key is None  # resolved at flush (docs/decisions/002)
    p.ref = "f1"
    with hooked.begin():
        hooked.add(p)
    with hooked.begin():
        [stored] = testing.assert_enqueued(hooked, type="parcel.noted", count=1)
        assert stored.key == b"F1" and stored.event_id == ev.id
    # A persistent instance can answer its key builder at once.
    with hooked.begin():
        assert p.record_event(type="parcel.noted").key == "F1"


def test_rollback_discards_an_unflushed_event_instead_of_writing_it_later(hooked: Session) -> None:
    with hooked.begin():
        p = Parcel(ref="g1")
        hooked.add(p)
    hooked.begin()
    p.record_event(type="parcel.cancelled")
    hooked.rollback()
    with hooked.begin():
        p.ref = "g2"  # a later, unrelated change must not carry the rolled-back event
    with hooked.begin():
        testing.assert_enqueued(hooked, type="parcel.cancelled", count=0)


def test_close_then_reuse_the_session_is_not_refused(hooked: Session) -> None:
    with hooked.begin():
        p = Parcel(ref="h1")
        hooked.add(p)
    hooked.begin()
    p.record_event(type="parcel.noted")
    hooked.close()  # the transaction is discarded, and with it the event
    with hooked.begin():
        hooked.add(Parcel(ref="h2"))
    with hooked.begin():
        testing.assert_enqueued(hooked, type="parcel.noted", count=0)
        testing.assert_enqueued(hooked, type="parcel.created", key="H2", count=1)


def test_savepoint_rollback_discards_only_its_own_events(hooked: Session) -> None:
    with hooked.begin():
        p = Parcel(ref="i1")
        hooked.add(p)
    with hooked.begin():
        p.record_event(type="parcel.outer")
        with hooked.begin_nested() as sp:  # flushes the outer event first
            p.record_event(type="parcel.inner")
            sp.rollback()
    with hooked.begin():
        assert [e.type for e in testing.pending_events(hooked, key="I1")] == ["parcel.created", "parcel.outer"]
