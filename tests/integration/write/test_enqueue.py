"""enqueue against the real database: rows, sequences, shards, return values, session kinds."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import outbox
from outbox.errors import SessionStateError
from outbox.schema import event, key_sequence


def _rows(conn: sa.Connection, topic: str) -> list[sa.Row[tuple[object, ...]]]:
    return list(conn.execute(sa.select(event).where(event.c.topic == topic).order_by(event.c.id)))


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def test_enqueue_on_connection_stores_row_and_returns_it(connection: sa.Connection) -> None:
    t = _topic()
    ev = outbox.Event(topic=t, type="order.created", key="o-1", data={"total": 12}, subject="o-1",
                      headers={"tenant": "acme", "raw": b"\x00\x01"})
    [stored] = outbox.enqueue(connection, ev)
    assert stored.event_id == ev.id and stored.topic == t and stored.key == b"o-1" and stored.key_seq == 1
    assert stored.shard == outbox.shard_for(t, b"o-1", ev.id, outbox.settings().shards)
    [row] = _rows(connection, t)
    assert row.id == stored.id and row.payload == b'{"total":12}' and row.content_type == "application/json"
    assert row.type == "order.created" and row.subject == "o-1" and row.time == ev.time
    assert row.headers == [{"name": "tenant", "value": "acme"}, {"name": "raw", "base64": "AAE="}]
    assert outbox.event.headers_from_json(row.headers) == [("tenant", b"acme"), ("raw", b"\x00\x01")]
    assert row.published_at is None and row.tx_id


def test_batch_numbers_each_key_in_call_order_and_ids_follow(connection: sa.Connection) -> None:
    t = _topic()
    evs = [outbox.Event(topic=t, type="x", key=k, data=i) for i, k in enumerate("abacab")]
    evs.append(outbox.Event(topic=t, type="x", data="no key"))
    stored = outbox.enqueue(connection, *evs)
    assert [s.event_id for s in stored] == [e.id for e in evs]
    assert [s.key_seq for s in stored] == [1, 1, 2, 1, 3, 2, None]
    more = outbox.enqueue(connection, outbox.Event(topic=t, type="x", key="a", data=9))
    assert more[0].key_seq == 4
    rows = _rows(connection, t)
    per_key: dict[bytes | None, list[int]] = {}
    for r in rows:
        per_key.setdefault(r.key, []).append(r.key_seq)
    assert per_key[b"a"] == [1, 2, 3, 4] and per_key[b"b"] == [1, 2] and per_key[None] == [None]
    seqs = {(r.topic, bytes(r.key)): r.last_seq for r in connection.execute(
        sa.select(key_sequence).where(key_sequence.c.topic == t))}
    assert seqs == {(t, b"a"): 4, (t, b"b"): 2, (t, b"c"): 1}


def test_bytes_payload_and_custom_content_type(connection: sa.Connection) -> None:
    t = _topic()
    outbox.enqueue(connection, outbox.Event(topic=t, type="blob", data=b"\x00raw", content_type="image/png"))
    [row] = _rows(connection, t)
    assert row.payload == b"\x00raw" and row.content_type == "image/png" and row.key is None


def test_enqueue_with_session_and_rollback_leaves_nothing(engine: sa.Engine) -> None:
    t = _topic()
    with Session(engine) as s:
        s.begin()
        outbox.enqueue(s, outbox.Event(topic=t, type="x", key="k", data=1))
        s.rollback()
    with engine.connect() as c:
        assert _rows(c, t) == []
        assert c.execute(sa.select(key_sequence).where(key_sequence.c.topic == t)).first() is None


def test_enqueue_without_transaction_is_refused(engine: sa.Engine, session: Session) -> None:
    ev = outbox.Event(topic=_topic(), type="x", data=1)
    with pytest.raises(SessionStateError, match="no active transaction"):
        outbox.enqueue(session, ev)
    with engine.connect() as c:
        with pytest.raises(SessionStateError):
            outbox.enqueue(c, ev)
        c.execute(sa.text("select 1"))
        c.commit()
        with pytest.raises(SessionStateError):
            outbox.enqueue(c, ev)
    with pytest.raises(SessionStateError, match="closed"):
        outbox.enqueue(c, ev)


def test_traceparent_from_the_active_span(connection: sa.Connection) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    t = _topic()
    ctx = SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with trace.use_span(NonRecordingSpan(ctx)):
        outbox.enqueue(connection, outbox.Event(topic=t, type="traced"))
    outbox.enqueue(connection, outbox.Event(topic=t, type="untraced"))
    assert [(r.type, r.traceparent) for r in _rows(connection, t)] == [
        ("traced", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("untraced", None),
    ]


def test_failed_transaction_is_refused(engine: sa.Engine) -> None:
    with Session(engine) as s:
        s.begin()
        with pytest.raises(sa.exc.ProgrammingError):
            s.execute(sa.text("select * from no_such_table"))
        with pytest.raises(outbox.errors.StoreError, match="enqueueing events"):
            # Postgres refuses every statement until rollback; the driver error is translated at the seam
            outbox.enqueue(s, outbox.Event(topic=_topic(), type="x"))
        s.rollback()


def test_configured_schema_is_used(fresh_db: str) -> None:
    from alembic import command

    from migrations import alembic_config

    command.upgrade(alembic_config(fresh_db, "app_outbox"), "heads")
    eng = sa.create_engine(fresh_db)
    try:
        outbox.configure(schema="app_outbox")
        with eng.begin() as c:
            [st] = outbox.enqueue(c, outbox.Event(topic="orders", type="x", key="k"))
            assert st.key_seq == 1
            assert _pending_count(c) == 1
        with eng.connect() as c:
            assert c.execute(sa.text("select count(*) from app_outbox.event")).scalar_one() == 1
            assert c.execute(sa.text("select count(*) from outbox.event")).scalar_one() == 0
    finally:
        outbox.configure()
        eng.dispose()


def _pending_count(c: sa.Connection) -> int:
    return len(outbox.testing.pending_events(c))
