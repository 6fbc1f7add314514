"""Fixtures for the audit area: committed producer/consumer databases with engines, and effect tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import sqlalchemy as sa

from outbox.inbox import Inbox
from outbox.reconcile import ConsumerDatabase, Options, Report, reconcile
from stack.env import Stack
from tests.integration.audit.helpers import publish_pending, write_orders
from tests.integration.relay.conftest import relay_env, relays  # noqa: F401 - re-exported fixtures (replay tests)

EFFECTS_DDL = "CREATE TABLE IF NOT EXISTS public.effect (event_id uuid PRIMARY KEY, grp text NOT NULL)"


def _engine(url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(url, pool_size=4)
    with eng.begin() as conn:
        conn.execute(sa.text(EFFECTS_DDL))
    yield eng
    eng.dispose()


@pytest.fixture
def producer_engine(fresh_db: str) -> Iterator[sa.Engine]:
    """The producer's database (committed writes; dropped after the test)."""
    yield from _engine(fresh_db)


@pytest.fixture
def new_database(stack: Stack) -> Iterator[Callable[[], str]]:
    """A factory of migrated databases (cloned from the template), all dropped after the test."""
    import os
    import uuid

    from tests.conftest import TEMPLATE_DB, _admin_exec

    made: list[str] = []

    def make() -> str:
        name = f"c_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        _admin_exec(stack, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        made.append(name)
        return stack.url(name)

    yield make
    for name in made:
        _admin_exec(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def consumer_url(new_database: Callable[[], str]) -> str:
    """A second, separate database for consumers: the inbox lives where the consumer's data lives."""
    return new_database()


@pytest.fixture
def consumer_engine(consumer_url: str) -> Iterator[sa.Engine]:
    yield from _engine(consumer_url)


@dataclass
class Scenario:
    producer: sa.Engine
    consumer: sa.Engine
    bootstrap: str
    topic: str

    def consume(self, group: str, n: int, timeout: float = 60) -> None:
        engine = self.consumer if group == "billing" else self.producer
        ib = Inbox(engine, group, [self.topic], lambda c, e: None, bootstrap=self.bootstrap)
        got, deadline = 0, time.monotonic() + timeout
        try:
            while got < n:
                assert time.monotonic() < deadline, f"{group} received {got}/{n}"
                got += ib.run_once().received
        finally:
            ib.close()

    def consume_all(self, n: int) -> None:
        for g in ("billing", "shipping"):
            self.consume(g, n)

    def reconcile(self, **kw: object) -> Report:
        opts = Options(**{"grace": timedelta(0), "stuck_after": timedelta(minutes=5), **kw})  # type: ignore[arg-type]
        return reconcile(self.producer, [ConsumerDatabase(self.consumer), ConsumerDatabase(self.producer)], opts)


@pytest.fixture
def scenario(producer_engine: sa.Engine, consumer_engine: sa.Engine, bootstrap: str, topic: str) -> Scenario:
    s = Scenario(producer_engine, consumer_engine, bootstrap, topic)
    write_orders(producer_engine, topic, 60, keys=6)
    publish_pending(producer_engine, bootstrap)
    s.consume_all(60)
    return s
