"""Rows the relay cannot turn into a record are dead-lettered with the reason; the shard keeps flowing.

Each corrupted row is written by raw SQL past the CHECKs of relay_0003 (as an older writer, a hand-written INSERT
or a bad migration could, before the upgrade), followed by a healthy row of another key in the same shard, which
must publish, and by a later row of the corrupted row's key, which must wait behind its dead letter. One real
shard worker (real Kafka, real Postgres) works through all of them; every round must return normally.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from migrations import alembic_config
from outbox.config import MAX_SHARDS
from outbox.event import TIME_MAX, TIME_MIN
from outbox.store.relay import RelayStore
from stack.env import Stack
from tests.conftest import TEMPLATE_DB, create_topic
from tests.integration.relay.harness import dsn
from tests.integration.relay.real_worker import (
    dead_letter_reason,
    in_kafka,
    insert_row,
    published,
    real_shard,
)

pytestmark = pytest.mark.kafka


@dataclass(frozen=True)
class Case:
    name: str
    says: str  # in the dead letter's reason
    topic: str | None = None  # None: the test's topic
    shard: int = 0
    headers: str = "[]"
    time_sql: str = "now()"
    type_: str = "test.event"
    content_type: str = "application/json"


CASES = [
    Case("headers-object", "not a list", headers='{"name": "h", "value": "v"}'),
    Case("headers-string", "not a list", headers='"h=v"'),
    Case("headers-numbers", "headers[0] is 1", headers="[1, 2]"),
    Case("header-without-value", "exactly one of 'value'", headers='[{"name": "h"}]'),
    Case("header-number-value", "int value", headers='[{"name": "h", "value": 5}]'),
    Case("header-bad-base64", "not valid base64", headers='[{"name": "h", "base64": "***"}]'),
    Case("header-reserved-name", "reserved header name", headers='[{"name": "outbox-id", "value": "1"}]'),
    Case("headers-nested-too-deep", "RecursionError", headers="[" * 3000 + "]" * 3000),
    Case("time-infinity", "time is infinite", time_sql="'infinity'"),
    Case("time-minus-infinity", "time is infinite", time_sql="'-infinity'"),
    Case("time-year-10000", "outside 0001-01-02", time_sql="'10000-01-01 00:00:00+00'"),
    Case("time-bc", "outside 0001-01-02", time_sql="'0044-03-15 00:00:00+00 BC'"),
    # within years 1..9999 but outside the span every client reads back (outbox.event.TIME_MIN..TIME_MAX)
    Case("time-0001-01-01", "outside 0001-01-02", time_sql="'0001-01-01 12:00:00+00'"),
    Case("time-9999-12-31", "9999-12-30T23:59:59.999999", time_sql="'9999-12-31 00:00:00+00'"),
    Case("topic-invalid", "characters Kafka rejects", topic="no spaces allowed"),
    Case("topic-too-long", "at most 249", topic="t" * 250),
    Case("type-empty", "type is ''", type_=""),
    Case("content-type-empty", "content_type is ''", content_type=""),
    Case("shard-negative", "shard -1 is outside 0..1023", shard=-1),
    Case("shard-beyond-the-maximum", "shard 1024 is outside 0..1023", shard=1024),
]


@dataclass(frozen=True)
class Written:
    bad: int
    healthy: int
    healthy_event: str
    later: int  # the corrupted row's key, after it


@dataclass
class Run:
    url: str
    topic: str
    rows: dict[str, Written]
    kafka: set[str]


@pytest.fixture(scope="module")
def run(stack: Stack) -> Iterator[Run]:
    bootstrap = stack.bootstrap
    assert bootstrap, "this test needs Kafka"
    name = f"hostile_{uuid.uuid4().hex[:8]}"
    admin = dsn(stack.url("postgres"))
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')  # type: ignore[arg-type]
    url = stack.url(name)
    topic = f"hostile-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=2)
    rows: dict[str, Written] = {}
    for i, case in enumerate(CASES):
        key = f"bad-{i}".encode()
        bad, _ = insert_row(url, topic=case.topic or topic, key=key, shard=case.shard, headers=case.headers,
                            time_sql=case.time_sql, type_=case.type_, content_type=case.content_type,
                            bypass_checks=True)
        healthy, eid = insert_row(url, topic=topic, key=f"good-{i}".encode())
        later, _ = insert_row(url, topic=case.topic or topic, key=key, bypass_checks=case.topic is not None)
        rows[case.name] = Written(bad, healthy, eid, later)
    shard = real_shard(url, bootstrap, 0)
    try:
        shard.run_until(lambda: all(dead_letter_reason(url, w.bad) and published(url, w.healthy)
                                    for w in rows.values()), 60, "every corrupted row dead-lettered")
        yield Run(url, topic, rows, in_kafka(bootstrap, topic))
    finally:
        shard.close()
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corrupted_row_is_dead_lettered_with_the_reason_and_its_shard_flows(run: Run, case: Case) -> None:
    w = run.rows[case.name]
    reason = dead_letter_reason(run.url, w.bad)
    assert reason is not None and case.says in reason, reason
    assert w.healthy_event in run.kafka, "the healthy row of another key in the same shard was published"
    assert not published(run.url, w.later) and dead_letter_reason(run.url, w.later) is None, \
        "the corrupted row's later row waits behind its dead letter (per-key order)"


def test_rows_the_checks_refuse_are_refused_when_written(fresh_db: str, topic: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_shard_in_range"):
        insert_row(fresh_db, topic=topic, key=b"k", shard=-1)
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_shard_in_range"):
        insert_row(fresh_db, topic=topic, key=b"k", shard=MAX_SHARDS)
    insert_row(fresh_db, topic=topic, key=b"k", shard=MAX_SHARDS - 1)  # a shard-count mismatch, not a bad row
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_time_in_range"):
        insert_row(fresh_db, topic=topic, key=b"k", time_sql="'infinity'")
    for outside in (TIME_MIN - timedelta(microseconds=1), TIME_MAX + timedelta(microseconds=1)):
        with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_time_in_range"):
            insert_row(fresh_db, topic=topic, key=b"k", time_sql=f"'{outside.isoformat()}'")
    for inside in (TIME_MIN, TIME_MAX):  # what enqueue accepts, the database accepts and the relay reads
        insert_row(fresh_db, topic=topic, key=b"k", time_sql=f"'{inside.isoformat()}'")
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_headers_list"):
        insert_row(fresh_db, topic=topic, key=b"k", headers='[{"name": "h"}]')
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_topic_name"):
        insert_row(fresh_db, topic="a b", key=b"k")
    with pytest.raises(psycopg.errors.CheckViolation, match="ck_event_attributes_present"):
        insert_row(fresh_db, topic=topic, key=b"k", type_="")
    insert_row(fresh_db, topic=topic, key=b"k", headers='[{"name": "h", "value": "v"}, {"name": "b", "base64": "A="}]')


def test_the_relay_claims_every_time_the_writer_and_the_database_accept(fresh_db: str, topic: str) -> None:
    ids = [insert_row(fresh_db, topic=topic, key=f"k{i}".encode(), time_sql=f"'{t.isoformat()}'")[0]
           for i, t in enumerate((TIME_MIN, TIME_MAX))]
    engine = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    try:
        rows = RelayStore(engine).claim(0, 10)
    finally:
        engine.dispose()
    assert [(r.id, r.time) for r in rows] == list(zip(ids, (TIME_MIN, TIME_MAX), strict=True))


def test_upgrade_over_existing_bad_rows_succeeds(stack: Stack) -> None:
    name = f"m_{uuid.uuid4().hex[:10]}"
    admin = dsn(stack.url("postgres"))
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        url = stack.url(name)
        cfg = alembic_config(url)
        for branch in ("audit_0002", "ops_0002", "relay_0002"):  # the three heads relay_0003 merges
            command.upgrade(cfg, branch)
        insert_row(url, topic="t", key=b"k", shard=-1, time_sql="'infinity'", headers='{"x": 1}')
        command.upgrade(cfg, "heads")
        with pytest.raises(psycopg.errors.CheckViolation):
            insert_row(url, topic="t", key=b"k2", shard=-1)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
