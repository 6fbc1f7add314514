"""Migrations are proven: head equals the declared schema, every revision steps down and up, the CLI works,
and a host application's own Alembic env can run ours beside its own tables, which the relay's check, `outbox
migrate` and `outbox roles sql` then find in the host's version table (tests/integration/relay/test_host_env.py
runs a relay on it)."""

from __future__ import annotations

import argparse
import logging
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from migrations import VERSION_TABLE, alembic_config
from migrations.status import Layout, SchemaState, SchemaStatus, VersionTable, our_heads
from outbox.config import MAX_SHARDS
from outbox.errors import SchemaBehindError
from outbox.event import TIME_MAX, TIME_MIN, TOPIC_RE
from outbox.schema import event, metadata
from outbox.store.relay_probe import NewRowsProbe
from outbox.store.roles import Role, role_name
from relay import startup
from relay.cli import app
from stack.env import Stack

HOST_ENV = Path(__file__).resolve().parent.parent / "fixtures" / "host_env"
runner = CliRunner()


@pytest.fixture
def empty_db(stack: Stack) -> Iterator[str]:
    """A brand-new empty database (not cloned from the migrated template)."""
    name = f"m_{uuid.uuid4().hex[:10]}"
    admin = stack.url("postgres").replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield stack.url(name)
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def schema_diff(url: str, schema: str = "outbox") -> list[Any]:
    """Autogenerate's diff between the database's ``schema`` and ``outbox.schema.metadata``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "include_schemas": True,
                "include_name": lambda name, type_, parents: (
                    name == schema if type_ == "schema" else name != VERSION_TABLE),
                "compare_type": True,
                "compare_server_default": True,
            })
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def tables(url: str, schema: str = "outbox") -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names(schema=schema))
    finally:
        engine.dispose()


def test_upgrade_heads_equals_declared_schema(empty_db: str) -> None:
    command.upgrade(alembic_config(empty_db), "heads")
    assert schema_diff(empty_db) == []
    assert {t.name for t in metadata.tables.values()} <= tables(empty_db)


def test_every_revision_steps_down_and_back_up(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    script = ScriptDirectory.from_config(cfg)
    command.upgrade(cfg, "heads")
    revisions = list(script.walk_revisions())  # heads first, base last
    assert len(revisions) >= 1
    for rev in revisions:
        # Unapply this revision (and whatever depends on it), then apply everything again.
        # A merge revision (relay_0003) has no single "-1": step down to one of its parents, which also unapplies
        # the other branches it joins.
        down = rev.down_revision
        target = "base" if down is None else f"{rev.revision}-1" if isinstance(down, str) else down[0]
        command.downgrade(cfg, target)
        command.upgrade(cfg, "heads")
        assert schema_diff(empty_db) == [], f"after stepping {rev.revision} down and up"
    command.downgrade(cfg, "base")
    assert tables(empty_db) == {VERSION_TABLE}
    command.upgrade(cfg, "heads")
    assert schema_diff(empty_db) == []


def test_other_schema_name(empty_db: str) -> None:
    command.upgrade(alembic_config(empty_db, "app_outbox"), "heads")
    assert "event" in tables(empty_db, "app_outbox") and not tables(empty_db, "outbox")
    r = runner.invoke(app, ["migrate", "check", "--database-url", empty_db, "--schema", "app_outbox"])
    assert r.exit_code == 0, r.output
    # The relay waker's raw-SQL probe follows the schema too (it bypasses SQLAlchemy's schema_translate_map).
    engine = sa.create_engine(empty_db)
    probe = NewRowsProbe(engine, "app_outbox")
    try:
        assert probe.newest_id() == 0 and probe.rows_after(0, 10) == []
    finally:
        probe.close()
        engine.dispose()


def test_cli_sql_prints_ddl() -> None:
    r = runner.invoke(app, ["migrate", "sql"])
    assert r.exit_code == 0, r.output
    for table in ("event", "key_sequence", "dead_letter", "inbox"):
        assert f"CREATE TABLE outbox.{table} (" in r.stdout
    r = runner.invoke(app, ["migrate", "sql", "--schema", "tenant_a"])
    assert 'CREATE SCHEMA IF NOT EXISTS "tenant_a"' in r.stdout and "CREATE TABLE tenant_a.event (" in r.stdout
    r = runner.invoke(app, ["migrate", "sql", "--schema", "bad-name"])
    assert r.exit_code == 3 and "OUTBOX_SCHEMA" in r.output


def test_cli_check_current_upgrade_downgrade(empty_db: str) -> None:
    url = ["--database-url", empty_db]
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 1 and "behind" in r.output and "outbox migrate upgrade" in r.output
    r = runner.invoke(app, ["migrate", "upgrade", "0001", *url])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["migrate", "check", *url]).exit_code == 1
    assert runner.invoke(app, ["migrate", "upgrade", *url]).exit_code == 0
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 0 and "up to date" in r.output
    r = runner.invoke(app, ["migrate", "current", *url])
    assert r.exit_code == 0 and "(head)" in r.stdout
    assert runner.invoke(app, ["migrate", "downgrade", "base", *url]).exit_code == 0
    assert tables(empty_db) == {VERSION_TABLE}


def test_cli_check_unreachable_and_missing_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTBOX_DATABASE_URL", raising=False)
    r = runner.invoke(app, ["migrate", "check", "--database-url", "postgresql+psycopg://u@127.0.0.1:1/none"])
    assert r.exit_code == 2 and "OperationalError" in r.output
    assert runner.invoke(app, ["migrate", "check"]).exit_code == 3
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:1/none")
    assert runner.invoke(app, ["migrate", "current"]).exit_code == 2


def _host_config(url: str) -> Config:
    cfg = Config(str(HOST_ENV / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def test_host_env_runs_our_migrations_beside_its_own(empty_db: str) -> None:
    cfg = _host_config(empty_db)
    heads = ScriptDirectory.from_config(cfg).get_heads()
    assert "host_0001" in heads and len(heads) >= 2
    command.upgrade(cfg, "heads")
    assert "widget" in tables(empty_db, "public")
    assert schema_diff(empty_db) == []  # our tables are exactly as declared
    # The host's autogenerate sees nothing to do: its own tables match, and ours are left alone.
    engine = sa.create_engine(empty_db, poolclass=sa.pool.NullPool)
    from migrations import exclude_outbox
    from tests.fixtures.host_env.models import metadata as host_metadata

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_schemas": True, "include_name": exclude_outbox})
        assert compare_metadata(ctx, host_metadata) == []
        unfiltered = MigrationContext.configure(conn, opts={"include_schemas": True})
        assert compare_metadata(unfiltered, host_metadata), "without the filter our tables would show as removed"
    engine.dispose()
    command.downgrade(cfg, "outbox@base")
    assert not tables(empty_db) - {VERSION_TABLE} and "widget" in tables(empty_db, "public")


def test_relay_0003_writes_out_the_values_of_the_rules_owners() -> None:
    """The migration hard-codes its CHECKs (a migration keeps meaning what it meant when written); they must
    still be the owners' values: the shard range (MAX_SHARDS), the time span (TIME_MIN..TIME_MAX) and the topic
    pattern (TOPIC_RE), as the declared schema derives them."""
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused"))
    rev = script.get_revision("relay_0003")
    assert rev is not None
    checks: dict[str, str] = rev.module.CHECKS
    declared = {c.name: str(c.sqltext) for c in event.constraints
                if isinstance(c, sa.CheckConstraint) and c.name != "ck_event_key_seq_iff_key"}
    assert checks == declared
    times = [datetime.fromisoformat(t) for t in re.findall(r"'(\d{4}-[^']+)'", checks["ck_event_time_in_range"])]
    assert times == [TIME_MIN, TIME_MAX]
    assert f"shard < {MAX_SHARDS})" in checks["ck_event_shard_in_range"]
    assert f"'^{TOPIC_RE.pattern}$'" in checks["ck_event_topic_name"]


# --- where our revisions are recorded (migrations/status.py): the outbox schema's own table, or the host's ----------
def _host_upgrade(url: str, target: str = "heads", **x: str) -> None:
    """``alembic upgrade <target>`` from the sample host env (``-x key=value`` for each of ``x``)."""
    cfg = _host_config(url)
    cfg.cmd_opts = argparse.Namespace(x=[f"{k}={v}" for k, v in x.items()])
    command.upgrade(cfg, target)


def _admin(url: str, *sql: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        for q in sql:
            c.execute(q)


def _check_schema(url: str, version_table: str | None = None) -> SchemaStatus:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return startup.check_schema(engine, "outbox", version_table)
    finally:
        engine.dispose()


def test_host_layout_behind_then_at_head_says_to_upgrade_from_the_host_env(empty_db: str) -> None:
    url = ["--database-url", empty_db]
    _host_upgrade(empty_db, "host@head")
    _host_upgrade(empty_db, "0001")  # ours, but not to head
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 1, r.output
    assert "is behind: database at 0001 (recorded in public.alembic_version by your application's own Alembic env)" \
        in r.stderr and "run `alembic upgrade heads` in your application's Alembic env" in r.stderr, r.stderr
    r = runner.invoke(app, ["migrate", "current", *url])
    assert r.exit_code == 0 and r.stdout.splitlines() == ["0001"], r.output  # not the host's own revision
    assert "public.alembic_version" in r.stderr
    with pytest.raises(SchemaBehindError, match=r"public\.alembic_version.*run `alembic upgrade heads`"):
        _check_schema(empty_db)
    # `outbox migrate upgrade` would record in outbox.alembic_version and create the tables a second time.
    for cmd in (["upgrade"], ["downgrade", "base"]):
        r = runner.invoke(app, ["migrate", *cmd, *url])
        assert r.exit_code == 3 and "by your application's own Alembic env: run `alembic" in r.stderr, r.output
    assert VERSION_TABLE not in tables(empty_db) and "event" in tables(empty_db)

    _host_upgrade(empty_db)
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 0 and "up to date" in r.stdout and "public.alembic_version" in r.stdout, r.output
    st = _check_schema(empty_db)
    assert (st.layout, st.table, st.state) == (Layout.HOST, VersionTable("public"), SchemaState.UP_TO_DATE)
    # Another outbox schema of the database is not the one the host's table records.
    r = runner.invoke(app, ["migrate", "check", *url, "--schema", "other"])
    assert r.exit_code == 1 and "run `outbox migrate upgrade`" in r.stderr, r.output


def test_a_version_table_discovery_cannot_find_is_named_by_outbox_version_table(empty_db: str) -> None:
    _admin(empty_db, "CREATE SCHEMA app")
    _host_upgrade(empty_db, version_table="host_versions", version_table_schema="app")
    url = ["--database-url", empty_db]
    r = runner.invoke(app, ["migrate", "check", *url])
    assert r.exit_code == 1 and "OUTBOX_VERSION_TABLE names its version table" in r.stderr, r.output
    r = runner.invoke(app, ["migrate", "check", *url, "--version-table", "app.host_versions"])
    assert r.exit_code == 0 and "app.host_versions" in r.stdout, r.output
    r = runner.invoke(app, ["migrate", "current", *url], env={"OUTBOX_VERSION_TABLE": "app.host_versions"})
    assert r.exit_code == 0 and r.stdout.splitlines() == [f"{h} (head)" for h in our_heads()], r.output
    assert runner.invoke(app, ["migrate", "upgrade", *url, "--version-table", "app.host_versions"]).exit_code == 3

    # The relay's role reads it with the grants `outbox roles sql` prints for it (USAGE on its schema too).
    prefix = f"v{uuid.uuid4().hex[:8]}"
    relay_role, login = role_name(Role.RELAY, prefix), f"{prefix}_login"
    r = runner.invoke(app, ["roles", "sql", "--prefix", prefix, "--role", "relay", *url,
                            "--version-table", "app.host_versions"])
    assert r.exit_code == 0, r.output
    assert f'GRANT USAGE ON SCHEMA "app" TO "{relay_role}";' in r.stdout
    assert f'GRANT SELECT ON "app"."host_versions" TO "{relay_role}";' in r.stdout
    _admin(empty_db, r.stdout, f'CREATE ROLE "{login}" LOGIN IN ROLE "{relay_role}"')
    try:
        as_relay = empty_db.replace("://postgres@", f"://{login}@")
        with pytest.raises(SchemaBehindError, match="OUTBOX_VERSION_TABLE"):
            _check_schema(as_relay)
        assert _check_schema(as_relay, "app.host_versions").state is SchemaState.UP_TO_DATE
    finally:
        _admin(empty_db, *(f'DROP OWNED BY "{n}"' for n in (login, relay_role)),
               *(f'DROP ROLE "{n}"' for n in (login, relay_role)))


def test_a_revision_this_code_does_not_know_is_ahead_for_the_relay_and_migrate_alike(
        fresh_db: str, caplog: pytest.LogCaptureFixture) -> None:
    """One rule (it used to be two: the relay compared with ⊆, `migrate check` with =): the own table recording a
    revision of a newer kafka-outbox is ahead, beside our head or instead of it."""
    for sql in ("INSERT INTO outbox.alembic_version VALUES ('zz_9999')",  # a new branch of a newer version
                "DELETE FROM outbox.alembic_version WHERE version_num <> 'zz_9999'"):  # a newer head of ours
        _admin(fresh_db, sql)
        r = runner.invoke(app, ["migrate", "check", "--database-url", fresh_db])
        assert r.exit_code == 1 and "is ahead" in r.stderr and "upgrade this code" in r.stderr, r.output
        with caplog.at_level(logging.WARNING, logger="relay.startup"):
            assert _check_schema(fresh_db).state is SchemaState.AHEAD  # the relay runs, and says so
        assert "the database schema is newer than this relay" in caplog.text
        caplog.clear()
