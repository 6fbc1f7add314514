"""Pure parts of the ops CLI: help texts, durations, times, URL handling (Postgres TLS passthrough), roles SQL."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from outbox.errors import ConfigError
from outbox.store.roles import Role, roles_sql
from relay.cli import app
from relay.cli.ops import make_engine, parse_duration, parse_time, sqlalchemy_url

TLS_URL = ("postgresql://relay:pw@db.example:5432/outbox?sslmode=verify-full&sslrootcert=/etc/outbox/ca.pem"
           "&sslcert=/etc/outbox/client.pem&sslkey=/etc/outbox/client.key")


@pytest.mark.parametrize("cmd", [["replay"], ["dlq"], ["dlq", "list"], ["dlq", "show"], ["dlq", "retry"],
                                 ["dlq", "discard"], ["prune"], ["roles", "sql"], ["status"]])
def test_help_works(cmd: list[str]) -> None:
    res = CliRunner().invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def test_durations() -> None:
    assert parse_duration("45s") == timedelta(seconds=45)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(" 2w ") == timedelta(weeks=2)
    assert parse_duration("1.5h") == timedelta(minutes=90)
    for bad in ("", "7", "d", "3 days", "-1d"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)


def test_times_default_to_utc() -> None:
    assert parse_time("2026-11-22T10:00:00").tzinfo is UTC  # type: ignore[union-attr]
    assert parse_time("2026-11-22T10:00:00Z") == parse_time("2026-11-22T11:00:00+01:00")
    assert parse_time(None) is None


def test_postgres_tls_options_pass_through_to_the_driver() -> None:
    url = sqlalchemy_url(TLS_URL)
    assert url.startswith("postgresql+psycopg://")
    eng = make_engine(TLS_URL, "outbox")
    _, kwargs = eng.dialect.create_connect_args(eng.url)
    assert kwargs["sslmode"] == "verify-full" and kwargs["sslrootcert"] == "/etc/outbox/ca.pem"
    assert kwargs["sslcert"] == "/etc/outbox/client.pem" and kwargs["sslkey"] == "/etc/outbox/client.key"
    assert "pw" not in repr(eng.url), "SQLAlchemy masks the password in the URL's repr"


def test_relay_settings_keep_the_tls_query_too() -> None:
    from relay.config import RelaySettings

    s = RelaySettings.load(environ={"OUTBOX_DATABASE_URL": TLS_URL, "KAFKA_BOOTSTRAP_SERVERS": "b:9093"})
    u = sa.make_url(s.sqlalchemy_url)
    assert u.query["sslmode"] == "verify-full" and u.query["sslrootcert"] == "/etc/outbox/ca.pem"


def test_bad_schema_and_url_are_config_errors_without_the_password() -> None:
    res = CliRunner().invoke(app, ["dlq", "list", "--database-url", TLS_URL, "--schema", "bad-name;"])
    assert res.exit_code == 3 and "OUTBOX_SCHEMA" in res.output
    res = CliRunner().invoke(app, ["dlq", "list", "--database-url", "nonsense://u:Secret99@x"])
    assert res.exit_code == 3 and "Secret99" not in res.output


def test_roles_sql_output_and_validation() -> None:
    res = CliRunner().invoke(app, ["roles", "sql", "--schema", "billing", "--prefix", "bill", "--role", "auditor"])
    assert res.exit_code == 0, res.output
    assert 'CREATE ROLE "bill_auditor" NOLOGIN' in res.stdout and '"billing".event' in res.stdout
    assert "bill_app" not in res.stdout
    sql = roles_sql()
    for r in Role:
        assert f'CREATE ROLE "outbox_{r.value}" NOLOGIN' in sql
    with pytest.raises(ValueError, match="identifier"):
        roles_sql(schema='x"; DROP TABLE y; --')
    res = CliRunner().invoke(app, ["roles", "sql", "--prefix", "a b"])
    assert res.exit_code == 3


def test_roles_sql_refuses_a_prefix_postgres_would_truncate() -> None:
    # The library call, not only the CLI: "outbox_" + 55 chars + "_consumer" would pass 63 and be cut silently.
    longest = max(len(r.value) for r in Role) + 1
    roles_sql(prefix="p" * (63 - longest))
    with pytest.raises(ConfigError, match=f"at most {63 - longest}"):
        roles_sql(prefix="p" * (64 - longest))
    roles_sql(prefix="p" * (63 - len("_app")), roles=(Role.APP,))  # only the roles asked for count
