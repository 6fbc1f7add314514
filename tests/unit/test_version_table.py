"""OUTBOX_VERSION_TABLE (migrations/status.py): what it accepts, everywhere it is read, and the grants
``outbox roles sql`` prints for the table it names. Against a database: tests/integration/test_migrations.py and
tests/integration/relay/test_host_env.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from migrations.status import VersionTable
from outbox.errors import ConfigError
from relay.cli import app
from relay.config import RelaySettings

UNREACHABLE = "postgresql://u@127.0.0.1:1/none"
BAD = ["a.b.c", "", ".v", "v.", "x-y", "1abc", "app.v;", "s" * 64, "s" * 64 + ".v"]
runner = CliRunner()


def test_parse() -> None:
    assert VersionTable.parse("alembic_version") == VersionTable(None, "alembic_version")
    assert VersionTable.parse(" app.host_versions ") == VersionTable("app", "host_versions")
    assert str(VersionTable("app", "v")) == "app.v" and str(VersionTable(None, "v")) == "v"
    assert VersionTable.parse("s" * 63 + "." + "t" * 63).schema == "s" * 63
    for bad in BAD:
        with pytest.raises(ValueError, match="OUTBOX_VERSION_TABLE must be"):
            VersionTable.parse(bad)


@pytest.mark.parametrize("bad", [b for b in BAD if b])
def test_the_relay_refuses_a_bad_value_naming_the_variable(bad: str) -> None:
    env = {"OUTBOX_DATABASE_URL": UNREACHABLE, "KAFKA_BOOTSTRAP_SERVERS": "k:1"}
    assert RelaySettings.load(environ=env).version_table is None
    assert RelaySettings.load(environ={**env, "OUTBOX_VERSION_TABLE": "app.v"}).version_table == "app.v"
    with pytest.raises(ConfigError, match="OUTBOX_VERSION_TABLE"):
        RelaySettings.load(environ={**env, "OUTBOX_VERSION_TABLE": bad})


@pytest.mark.parametrize("cmd", [["check"], ["current"], ["upgrade"], ["downgrade", "base"]], ids=" ".join)
def test_migrate_refuses_a_bad_value_before_connecting(cmd: list[str]) -> None:
    r = runner.invoke(app, ["migrate", *cmd, "--database-url", UNREACHABLE, "--version-table", "a.b.c"])
    assert r.exit_code == 3 and "OUTBOX_VERSION_TABLE must be" in r.stderr, r.output
    assert "unreachable" not in r.output


def test_roles_sql_grants_on_the_version_table_it_is_given() -> None:
    r = runner.invoke(app, ["roles", "sql"], env={"OUTBOX_DATABASE_URL": None, "OUTBOX_VERSION_TABLE": None})
    assert r.exit_code == 0, r.output  # no database, no setting: the outbox schema's own table, offline
    assert 'GRANT SELECT ON "outbox"."alembic_version" TO "outbox_relay";' in r.stdout
    assert r.stdout.count("GRANT USAGE ON SCHEMA") == 5  # the outbox schema, once per role

    r = runner.invoke(app, ["roles", "sql", "--version-table", "app.host_versions"],
                      env={"OUTBOX_DATABASE_URL": UNREACHABLE})  # named: no database needed
    assert r.exit_code == 0, r.output
    assert "alembic_version" not in r.stdout
    assert 'GRANT SELECT ON "app"."host_versions" TO "outbox_relay";' in r.stdout
    # Reading it needs USAGE on its schema: the roles that read it get that, the others not.
    usage = {line.split('"')[-2] for line in r.stdout.splitlines() if line.startswith('GRANT USAGE ON SCHEMA "app"')}
    assert usage == {"outbox_relay", "outbox_auditor", "outbox_operator"}
    statements = " ".join(r.stdout.split()).split(";")  # a long GRANT may be wrapped over lines
    for role in ("auditor", "operator"):
        every_table = [s for s in statements if "GRANT SELECT ON" in s and f'"outbox_{role}"' in s]
        assert every_table and '"app"."host_versions" TO' in every_table[0], every_table

    r = runner.invoke(app, ["roles", "sql", "--version-table", "host_versions"])
    assert r.exit_code == 0 and 'GRANT SELECT ON "host_versions" TO "outbox_relay";' in r.stdout, r.output
    assert r.stdout.count("GRANT USAGE ON SCHEMA") == 5  # unqualified: found through the search path

    r = runner.invoke(app, ["roles", "sql", "--version-table", "a.b.c"])
    assert r.exit_code == 3 and "OUTBOX_VERSION_TABLE must be" in r.stderr, r.output


def test_roles_sql_without_a_version_table_asks_the_database() -> None:
    r = runner.invoke(app, ["roles", "sql", "--database-url", UNREACHABLE], env={"OUTBOX_VERSION_TABLE": None})
    assert r.exit_code == 2 and "database unavailable" in r.stderr, r.output
