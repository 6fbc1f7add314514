"""The documented "our migrations in your Alembic env" path (docs/write-side.md) ends in a relay that starts and
publishes: a host application (tests/fixtures/host_env: its own revisions and version table) runs
``alembic upgrade heads``, which records our revisions in *its* version table (public.alembic_version). Then
``outbox migrate check``/``current`` report that table, ``outbox migrate upgrade`` refuses to create the tables a
second time, ``outbox roles sql`` grants SELECT on that table, and a real relay logged in with only those grants
starts and publishes to the real Kafka (read back by a read_committed consumer).

The finer cases (behind, a table discovery cannot find, a newer schema) are in tests/integration/test_migrations.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from typer.testing import CliRunner

import outbox
from migrations.status import our_heads
from outbox.store.roles import Role, role_name
from relay.cli import app
from stack.env import Stack
from tests.integration.relay.harness import RelayProcess, dsn, pending, scalar, verify, wait_until, write_events

HOST_ENV = Path(__file__).resolve().parents[2] / "fixtures" / "host_env"
runner = CliRunner()


def _admin(url: str, *sql: str) -> None:
    with psycopg.connect(dsn(url), autocommit=True) as c:
        for q in sql:
            c.execute(q)


@pytest.fixture
def host_db(stack: Stack) -> Iterator[str]:
    """A brand-new database migrated only by the host application's own Alembic env (``alembic upgrade heads``)."""
    name = f"host_{uuid.uuid4().hex[:10]}"
    admin = stack.url("postgres")
    _admin(admin, f'CREATE DATABASE "{name}"')
    try:
        url = stack.url(name)
        cfg = Config(str(HOST_ENV / "alembic.ini"))
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        command.upgrade(cfg, "heads")
        yield url
    finally:
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_relay_on_a_schema_migrated_by_the_host_env_starts_and_publishes(
        host_db: str, bootstrap: str, topic: str, tmp_path: Path) -> None:
    recorded = scalar(host_db, "SELECT array_agg(version_num ORDER BY version_num) FROM public.alembic_version")
    assert recorded == sorted(["host_0001", *our_heads()])
    assert scalar(host_db, "SELECT to_regclass('outbox.alembic_version')") is None

    url = ["--database-url", host_db]
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 0, r.output
    assert "is up to date" in r.stdout and "recorded in public.alembic_version by your application's own" in r.stdout
    r = runner.invoke(app, ["migrate", "current", *url])
    assert r.exit_code == 0 and r.stdout.splitlines() == [f"{h} (head)" for h in our_heads()], r.output
    r = runner.invoke(app, ["migrate", "upgrade", *url])
    assert r.exit_code == 3 and "run `alembic upgrade heads` in that env" in r.stderr, r.output
    assert scalar(host_db, "SELECT to_regclass('outbox.alembic_version')") is None

    prefix = f"h{uuid.uuid4().hex[:8]}"
    relay_role, login = role_name(Role.RELAY, prefix), f"{prefix}_login"
    r = runner.invoke(app, ["roles", "sql", "--role", "relay", "--prefix", prefix, *url])
    assert r.exit_code == 0, r.output
    assert f'GRANT SELECT ON "public"."alembic_version" TO "{relay_role}";' in r.stdout
    assert "outbox.alembic_version" not in r.stdout.replace('"', "")
    _admin(host_db, r.stdout, f'CREATE ROLE "{login}" LOGIN IN ROLE "{relay_role}"')
    # One shard with one producer, for writers and relay alike: what is proven here does not need more, and each
    # transactional producer costs a start-up round with the broker's coordinator.
    outbox.configure(shards=1)
    try:
        ids = write_events(host_db, topic, 6, keys=3)
        tag = uuid.uuid4().hex[:8]
        relay = RelayProcess({
            "OUTBOX_DATABASE_URL": host_db.replace("://postgres@", f"://{login}@"),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTBOX_SHARDS": "1", "OUTBOX_RELAY_PRODUCERS_PER_SHARD": "1",
            "OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX": f"relay-{tag}", "OUTBOX_RELAY_CHECKPOINT_TOPIC": f"ckpt-{tag}",
        }, tmp_path, "host-env").start()
        try:
            wait_until(lambda: pending(host_db) == 0 or not relay.alive(), 90,
                       lambda: f"the events to be published; relay log:\n{relay.logs()}")
            assert relay.alive(), f"the relay exited:\n{relay.logs()}"
            assert relay.stop() == 0, relay.logs()
        finally:
            relay.kill()
        assert "schema behind" not in relay.logs(200) and "waiting for" not in relay.logs(200), relay.logs(200)
        v = verify(host_db, bootstrap, [topic], check_hanging=False, settle_s=5)
        assert v.clean and v.events == v.seen == len(ids), str(v)
    finally:
        outbox.configure()  # back to the environment's settings
        names = (login, relay_role)
        _admin(host_db, *(f'DROP OWNED BY "{n}"' for n in names), *(f'DROP ROLE "{n}"' for n in names))
