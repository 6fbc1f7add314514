"""Fixtures for the ops area: a committed database with events in known states, and the CLI runner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import outbox
from outbox.schema import event
from outbox.store.relay import RelayStore
from tests.integration.relay.conftest import relay_env, relays  # noqa: F401 - re-exported fixtures


@dataclass
class Db:
    """A committed outbox database for one test, with helpers to put rows in each state."""

    url: str
    engine: sa.Engine

    def write(self, topic: str, keys: Sequence[str | None]) -> list[outbox.StoredEvent]:
        """Enqueue one event per key (in order) through the real write API, and commit."""
        with self.engine.begin() as conn:
            return outbox.enqueue(conn, *(outbox.Event(topic=topic, type="t.happened", key=k, data={"i": i})
                                          for i, k in enumerate(keys)))

    def publish(self, ids: Sequence[int]) -> None:
        """Mark rows published as the relay would (fake partition/offset)."""
        with self.engine.begin() as conn:
            conn.execute(event.update().where(event.c.id.in_(list(ids)))
                         .values(published_at=sa.func.now() - sa.text("interval '1 day'"), kafka_partition=0,
                                 kafka_offset=event.c.id, relay_epoch=1))

    def dead_letter(self, row_id: int, reason: str = "MSG_SIZE_TOO_LARGE: record too large") -> None:
        """Dead-letter a pending row through the relay's own store (under a real lease)."""
        shard = self.row(row_id).shard
        rs = RelayStore(self.engine)
        rs.ensure_leases(max(8, shard + 1))
        epoch = rs.acquire("ops-test", [shard], 60)[shard]
        assert rs.dead_letter(shard, "ops-test", epoch, row_id, reason=reason, error_class="PermanentPublishError")
        rs.release("ops-test", {shard: epoch})  # a relay started later takes the shard at once

    def row(self, row_id: int) -> sa.Row:  # type: ignore[type-arg]
        with self.engine.connect() as conn:
            return conn.execute(sa.select(event).where(event.c.id == row_id)).one()

    def rows(self) -> list[sa.Row]:  # type: ignore[type-arg]
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(event).order_by(event.c.id)).all())

    def scalar(self, sql: str, **params: object) -> object:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()


@pytest.fixture
def db(fresh_db: str) -> Iterator[Db]:
    eng = sa.create_engine(fresh_db, pool_size=3)
    yield Db(fresh_db, eng)
    eng.dispose()


@pytest.fixture
def cli() -> Cli:
    return Cli()


class Cli:
    """Runs ``outbox ...`` in-process; returns the result (exit_code, stdout, stderr)."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, url: str | None = None) -> object:
        from relay.cli import app

        argv = list(args) + (["--database-url", url] if url else [])
        return self.runner.invoke(app, argv, catch_exceptions=False)


def uid() -> str:
    return uuid.uuid4().hex[:10]
