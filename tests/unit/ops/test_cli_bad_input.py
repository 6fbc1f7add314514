"""Bad input to the ops and migrate commands gets a message naming what to fix and a documented exit code
(docs/operations.md), never a traceback. Nothing here reaches a database: the checks run before any connect, or
the database is a closed port (refused at once)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import typer
from typer.testing import CliRunner, Result

from relay.cli import app
from relay.cli.ops import parse_duration

UNREACHABLE = "postgresql://ops:Hunter2Secret@127.0.0.1:1/outbox"
ONE_ID = ["--event-id", "01937c1e-0000-7000-8000-000000000000"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OUTBOX_DATABASE_URL", "OUTBOX_SCHEMA", "OUTBOX_SHARDS"):
        monkeypatch.delenv(var, raising=False)


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env or None)


def text(res: Result) -> str:
    """The output on one line: typer draws usage errors in a box and wraps them."""
    return " ".join(res.output.replace("│", " ").split())


def no_traceback(res: Result) -> None:
    assert isinstance(res.exception, SystemExit), f"{res.exception!r}\n{res.output}"


# --- 1: every command checks its URL through relay.dburl --------------------------------------------------
URL_COMMANDS: list[list[str]] = [
    ["replay", "--topic", "t"], ["prune"], ["dlq", "list"], ["dlq", "show", "1"], ["dlq", "retry", "1"],
    ["dlq", "discard", "1"], ["migrate", "upgrade"], ["migrate", "downgrade", "base"], ["migrate", "check"],
    ["migrate", "current"],
]
BAD_URLS = {
    "mysql://u:Secret9@h/db": "must be a PostgreSQL URL",
    "sqlite:///tmp/outbox.db": "must be a PostgreSQL URL",
    "not a url": "is not a database URL",
    "postgresql+psycopg2://u:Secret9@h/db": "'psycopg2' driver is not supported",
    "postgresql+asyncpg://u:Secret9@h/db": "'asyncpg' driver is not supported",
}


@pytest.mark.parametrize("cmd", URL_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("url", list(BAD_URLS))
def test_unsupported_database_urls_are_config_errors(cmd: list[str], url: str) -> None:
    res = run(*cmd, "--database-url", url)
    no_traceback(res)
    assert res.exit_code == 3, res.output
    assert BAD_URLS[url] in text(res) and "OUTBOX_DATABASE_URL" in text(res)
    assert "Secret9" not in res.output


def test_the_url_may_come_from_the_environment_too() -> None:
    res = run("migrate", "current", OUTBOX_DATABASE_URL="mysql://u@h/db")
    assert res.exit_code == 3 and "must be a PostgreSQL URL" in text(res)
    res = run("migrate", "check")
    assert res.exit_code == 3 and "OUTBOX_DATABASE_URL (--database-url) is not set" in text(res)


# --- 2: durations --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "says"), [
    ("99999999999w", "too long"), ("9" * 400 + "s", "too long"), ("36501d", "too long"),
    ("0d", "not longer than zero"), ("0.0000001s", "not longer than zero"), ("-1d", "not a duration"),
])
def test_durations_that_overflow_or_are_not_positive_are_refused(given: str, says: str) -> None:
    with pytest.raises(typer.BadParameter, match=says) as e:
        parse_duration(given, "--older-than")
    assert e.value.param_hint == "--older-than"


def test_the_longest_duration_is_accepted() -> None:
    assert parse_duration("36500d") == timedelta(days=36500)


@pytest.mark.parametrize("given", ["99999999999w", "0d"])
def test_prune_names_the_flag_of_a_bad_duration(given: str) -> None:
    res = run("prune", "--older-than", given, "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2 and "--older-than" in text(res) and repr(given) in text(res), res.output


# --- 3: revisions --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rev", ["::::", "0001::", ":", "a:", ":b", "", "@"])
def test_migrate_sql_explains_the_revision_forms(rev: str) -> None:
    res = run("migrate", "sql", rev)
    no_traceback(res)
    assert res.exit_code == 2, res.output
    assert "is not a revision" in text(res) and "`heads`, a revision id" in text(res) and "`FROM:TO`" in text(res)


@pytest.mark.parametrize("cmd", ["upgrade", "downgrade"])
def test_migrate_upgrade_and_downgrade_refuse_a_range_before_connecting(cmd: str) -> None:
    res = run("migrate", cmd, "0001:heads", "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2 and "only for `outbox migrate sql`" in text(res), res.output


def test_a_good_range_still_prints_sql() -> None:
    res = run("migrate", "sql", "0001:ops_0002")
    assert res.exit_code == 0, res.output
    assert "autovacuum" in res.stdout


# --- 4: inverted replay ranges ---------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "says"), [
    (["--from-id", "10", "--to-id", "5"], "--from-id 10 is after --to-id 5"),
    (["--since", "2026-11-22T11:00:00Z", "--until", "2026-11-22T10:00:00Z"], "is not before --until"),
    (["--since", "2026-11-22T10:00:00Z", "--until", "2026-11-22T10:00:00Z"], "the window is empty"),
])
def test_inverted_replay_ranges_are_refused(args: list[str], says: str) -> None:
    res = run("replay", *args, "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2 and says in text(res), res.output
    assert "database" not in text(res), "refused before connecting"


# --- 5: ids and limits within range ----------------------------------------------------------------------
TOO_BIG = "99999999999999999999"


@pytest.mark.parametrize(("args", "names"), [
    (["dlq", "show", TOO_BIG], "'ID'"), (["dlq", "retry", "1", TOO_BIG], "'ID'"),
    (["dlq", "discard", TOO_BIG], "'ID'"), (["dlq", "show", "0"], "'ID'"),
    (["dlq", "list", "--limit", "9" * 30], "'--limit'"), (["dlq", "list", "--limit", "100001"], "'--limit'"),
    (["replay", "--from-id", TOO_BIG], "'--from-id'"), (["replay", "--to-id", TOO_BIG], "'--to-id'"),
    (["replay", "--from-id", "0"], "'--from-id'"),
])
def test_ids_and_limits_out_of_range_are_usage_errors_naming_the_argument(args: list[str], names: str) -> None:
    res = run(*args, "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2 and f"Invalid value for {names}" in text(res), res.output
    assert "database" not in text(res), "refused before connecting"


def test_the_largest_bigint_id_passes_the_cli_check() -> None:
    res = run("dlq", "show", str(2**63 - 1), "--database-url", UNREACHABLE)
    assert res.exit_code == 2 and "database unavailable" in text(res), res.output


# --- 7: OUTBOX_SHARDS is configuration -------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [["replay", "--topic", "t"], ["dlq", "retry", "1"]], ids=" ".join)
@pytest.mark.parametrize("value", ["0", "1025", "abc", "-3"])
def test_bad_shard_counts_are_config_errors_naming_outbox_shards(cmd: list[str], value: str) -> None:
    for res in (run(*cmd, "--database-url", UNREACHABLE, OUTBOX_SHARDS=value),
                run(*cmd, "--shards", value, "--database-url", UNREACHABLE)):
        no_traceback(res)
        assert res.exit_code == 3, res.output
        assert f"OUTBOX_SHARDS (--shards) must be an integer from 1 to 1024, got {value!r}" in text(res)


# --- 8: an empty topic ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [["replay"], ["dlq", "list"]], ids=" ".join)
@pytest.mark.parametrize("topic", ["", "  "])
def test_an_empty_topic_is_named_as_such(cmd: list[str], topic: str) -> None:
    res = run(*cmd, "--topic", topic, "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2 and "--topic: the topic is empty" in text(res), res.output
    assert "give at least one of" not in text(res)


# --- 9: migrate check/current: the schema first, and an unreachable database said plainly -------------------
@pytest.mark.parametrize("cmd", ["check", "current"])
def test_migrate_checks_the_schema_name_before_connecting(cmd: str) -> None:
    res = run("migrate", cmd, "--database-url", UNREACHABLE, "--schema", "bad-name")
    no_traceback(res)
    assert res.exit_code == 3 and "OUTBOX_SCHEMA" in text(res), res.output


@pytest.mark.parametrize("cmd", [["check"], ["current"], ["upgrade"], ["downgrade", "base"]], ids=" ".join)
def test_an_unreachable_database_is_said_so_without_the_password(cmd: list[str]) -> None:
    res = run("migrate", *cmd, "--database-url", UNREACHABLE)
    no_traceback(res)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: database unreachable: connection failed"), res.output
    assert "Hunter2Secret" not in res.output


# --- 10: role name prefixes ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "room"), [([], 54), (["--role", "app"], 59), (["--role", "app", "--role",
                                                                                  "operator"], 54)])
def test_roles_prefix_says_its_maximum_length(args: list[str], room: int) -> None:
    res = run("roles", "sql", *args, "--prefix", "p" * (room + 1))
    no_traceback(res)
    assert res.exit_code == 3, res.output
    assert f"--prefix is {room + 1} characters long: at most {room}" in text(res)
    ok = run("roles", "sql", *args, "--prefix", "p" * room)
    assert ok.exit_code == 0, ok.output
    names = [w for w in ok.stdout.split() if w.startswith('"p')]
    assert names and all(len(n.strip('";')) <= 63 for n in names)


def test_roles_schema_says_its_maximum_length() -> None:
    res = run("roles", "sql", "--schema", "s" * 64)
    assert res.exit_code == 3 and "OUTBOX_SCHEMA is 64 characters long: at most 63" in text(res), res.output
