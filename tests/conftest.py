"""Fixtures: one real stack per test session, and per-test isolation on top of it.

* ``stack``      Postgres + a 1-node Kafka, started once per session (or the user's services, see stack.env).
* ``pg_url``     a migrated database shared by the session; ``session``/``connection`` roll back after the test.
* ``fresh_db``   a database cloned from the migrated template, for tests that must commit.
* ``topic``      a unique, freshly created topic (3 partitions).
* ``cluster3``   a 3-node Kafka cluster (RF 3, min.insync 2), started on first use.
* ``pgbouncer``  ``pgbouncer(pool_mode)``: a real PgBouncer in front of the stack's Postgres, one per pool mode,
                 started on first use (Debian's package, installed by stack.pgbouncer if missing).

A test that needs a service and cannot get it fails with the reason; it is never skipped.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from stack.env import Stack, start_cluster, start_stack
from stack.kafka import KafkaCluster
from stack.pgbouncer import PgBouncer
from stack.process import StackError

# The suite's multi-shard tests (even splits over instances, failover, zombies, stranded shards, chaos) are
# written for 8 shards: pinned here so they keep their meaning whatever the product default (docs/decisions/014).
# Writers (outbox.configure() re-reads the environment) and every relay a test starts inherit it; the defaults
# themselves are pinned by unit tests.
os.environ.setdefault("OUTBOX_SHARDS", "8")

TEMPLATE_DB = "outbox_template"
SHARED_DB = "outbox_shared"


def _fail(what: str, exc: BaseException) -> None:
    pytest.fail(f"{what} could not be started, and tests that need it fail rather than skip: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    try:
        s = start_stack(home=home)
    except (StackError, OSError) as exc:
        _fail("The test stack (Postgres + Kafka)", exc)
        raise
    try:
        _prepare_databases(s)
        yield s
    finally:
        s.stop()


def _admin_exec(s: Stack, *sql: str) -> None:
    import psycopg

    dsn = s.url("postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as c:
        for q in sql:
            c.execute(q)  # type: ignore[arg-type]


def _prepare_databases(s: Stack) -> None:
    from alembic import command

    from migrations import alembic_config

    _admin_exec(s, f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)',
                f'DROP DATABASE IF EXISTS "{SHARED_DB}" WITH (FORCE)', f'CREATE DATABASE "{TEMPLATE_DB}"')
    command.upgrade(alembic_config(s.url(TEMPLATE_DB)), "heads")
    _admin_exec(s, f'CREATE DATABASE "{SHARED_DB}" TEMPLATE "{TEMPLATE_DB}"')


@pytest.fixture(scope="session")
def pg_url(stack: Stack) -> str:
    return stack.url(SHARED_DB)


@pytest.fixture(scope="session")
def engine(pg_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(pg_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def connection(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection inside an outer transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


@pytest.fixture
def session(connection: sa.Connection) -> Iterator[Session]:
    """An ORM session whose commits become savepoints of the rolled-back outer transaction."""
    with Session(bind=connection, join_transaction_mode="create_savepoint") as s:
        yield s


_db_counter = itertools.count()


@pytest.fixture
def fresh_db(stack: Stack) -> Iterator[str]:
    """A database cloned from the migrated template, dropped afterwards: for tests that must commit."""
    name = f"t_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"
    _admin_exec(stack, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    try:
        yield stack.url(name)
    finally:
        _admin_exec(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def bootstrap(stack: Stack) -> str:
    if not stack.bootstrap:
        pytest.fail("this test needs Kafka but the stack has none", pytrace=False)
    _assert_brokers_alive(stack)
    return stack.bootstrap


def _assert_brokers_alive(stack: Stack) -> None:
    if stack.kafka is None:
        return
    for n in stack.kafka.nodes:
        if not n.running():
            from stack.process import tail

            pytest.fail(f"Kafka node {n.node_id} is not running; last log lines:\n"
                        f"{tail(n.log_dir / 'stdout.log')}", pytrace=False)


@pytest.fixture
def topic(bootstrap: str, stack: Stack) -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    create_topic(bootstrap, name, partitions=3)
    return name


def create_topic(bootstrap: str, name: str, partitions: int = 3, replication: int = 1,
                 config: dict[str, str] | None = None) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(name, partitions, replication, config=config or {})],
                              operation_timeout=30)
    fut[name].result(60)


@pytest.fixture(scope="session")
def cluster3(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    try:
        c = start_cluster(home=tmp_path_factory.mktemp("cluster"), nodes=3)
    except (StackError, OSError) as exc:
        _fail("The 3-node Kafka cluster", exc)
        raise
    stack.extra_clusters.append(c)
    yield c
    c.stop()
    stack.extra_clusters.remove(c)


@pytest.fixture(scope="session")
def pgbouncer(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], PgBouncer]]:
    """``pgbouncer("transaction")`` (or "session", "statement"): a PgBouncer in that pool mode in front of the
    stack's Postgres, each started on first use (a few milliseconds) and kept for the session; ``.url(db)``."""
    home = tmp_path_factory.mktemp("pgbouncer")
    started: dict[str, PgBouncer] = {}

    def get(pool_mode: str) -> PgBouncer:
        if pool_mode not in started:
            try:
                # Room for a relay in session mode: its pool (OUTBOX_SHARDS + 4) plus SQLAlchemy's overflow (10).
                started[pool_mode] = PgBouncer(stack.database_url, home / pool_mode, pool_mode, pool_size=40).start()
            except (StackError, OSError) as exc:
                _fail(f"PgBouncer ({pool_mode} pooling)", exc)
                raise
        return started[pool_mode]

    yield get
    for b in started.values():
        b.stop()
