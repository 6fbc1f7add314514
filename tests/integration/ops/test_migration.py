"""Revision ops_0002: autovacuum settings on the hot event table; steps down and up cleanly."""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import command

from migrations import alembic_config

mig = importlib.import_module("migrations.versions.ops_0002_event_autovacuum")


def _reloptions(url: str) -> dict[str, str]:
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    with eng.connect() as c:
        opts = c.execute(sa.text("SELECT reloptions FROM pg_class WHERE oid = 'outbox.event'::regclass")).scalar()
    eng.dispose()
    return dict(o.split("=", 1) for o in opts or [])


def _heads(url: str) -> set[str]:
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    with eng.connect() as c:
        heads = {r[0] for r in c.execute(sa.text("SELECT version_num FROM outbox.alembic_version"))}
    eng.dispose()
    return heads


def test_upgrade_sets_autovacuum_and_it_steps_down_and_up(fresh_db: str) -> None:
    assert _reloptions(fresh_db) == mig.EVENT_RELOPTIONS
    cfg = alembic_config(fresh_db)
    top = _heads(fresh_db)
    # relay_0003 merges this branch with the others: the merge steps down first (the three branches stay), then
    # only this branch.
    command.downgrade(cfg, "relay_0002")
    command.downgrade(cfg, "ops_0002@-1")
    assert _reloptions(fresh_db) == {}
    assert _heads(fresh_db) == {"audit_0002", "relay_0002"}
    command.upgrade(cfg, "heads")
    assert _reloptions(fresh_db) == mig.EVENT_RELOPTIONS
    assert _heads(fresh_db) == top


def test_offline_sql_contains_the_settings() -> None:
    import contextlib
    import io

    buf = io.StringIO()
    cfg = alembic_config("postgresql+psycopg://nobody@localhost/none")
    cfg.output_buffer = buf
    with contextlib.redirect_stdout(buf):
        command.upgrade(cfg, "0001:ops_0002", sql=True)
    assert "autovacuum_vacuum_scale_factor = 0.01" in buf.getvalue()


def test_current_on_an_unmigrated_schema_says_what_to_run(fresh_db: str) -> None:
    from typer.testing import CliRunner

    from relay.cli import app

    res = CliRunner().invoke(app, ["migrate", "current", "--database-url", fresh_db, "--schema", "never_migrated"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "(none: run `outbox migrate upgrade`)"
