"""Fixtures for the audit area: committed producer/consumer databases with engines, and effect tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from stack.env import Stack

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
def consumer_url(stack: Stack) -> Iterator[str]:
    """A second, separate database for consumers: the inbox lives where the consumer's data lives."""
    import os
    import uuid

    from tests.conftest import TEMPLATE_DB, _admin_exec

    name = f"c_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _admin_exec(stack, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
    try:
        yield stack.url(name)
    finally:
        _admin_exec(stack, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def consumer_engine(consumer_url: str) -> Iterator[sa.Engine]:
    yield from _engine(consumer_url)
