"""The operator commands take the forms the other commands take: `outbox replay --since/--until` the times and
durations ago `outbox reconcile` takes (one parser, outbox.timeparse), `outbox dlq` `--format json` (its earlier
`--json` kept as a hidden, deprecated alias). Nothing here reaches a database: the database URL is a closed port,
so an accepted argument shows as "could not connect" and a refused one as a usage error before it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner, Result

from relay.cli import app
from relay.cli.ops_args import parse_time

UNREACHABLE = "postgresql://ops:Hunter2Secret@127.0.0.1:1/outbox"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OUTBOX_DATABASE_URL", "OUTBOX_SCHEMA", "OUTBOX_SHARDS"):
        monkeypatch.delenv(var, raising=False)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, [*args, "--database-url", UNREACHABLE], env={"COLUMNS": "250"})


def text(res: Result) -> str:
    return " ".join(res.output.replace("│", " ").split())


def connected(res: Result) -> bool:
    """The command got past its arguments: it tried the database (exit 2, saying so)."""
    return res.exit_code == 2 and "database" in text(res) and "Usage:" not in res.output


def test_replay_times_are_iso_or_a_duration_ago_as_for_reconcile() -> None:
    assert parse_time("2h", "--since", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2026-11-22T10:00:00", "--since", NOW) == NOW
    assert parse_time("0s", "--until", NOW) == NOW
    for since in ("1h", "90m", "1.5h", "7d", "2w", "2026-11-22T10:00:00Z"):
        res = run("replay", "--since", since)
        assert connected(res), res.output
    res = run("replay", "--since", "2h", "--until", "1h")
    assert connected(res), res.output


@pytest.mark.parametrize(("args", "says"), [
    (["--since", "1h", "--until", "2h"], "--since 1h is not before --until 2h"),
    (["--since", "yesterday"], "Invalid value for --since: expected an ISO time (2026-11-01T00:00:00Z) or a "
                               "duration ago like 2h, got 'yesterday'"),
    (["--until", "36501d"], "Invalid value for --until: a duration ago must be at most 36500d (100 years)"),
])
def test_replay_refuses_bad_times_naming_the_flag(args: list[str], says: str) -> None:
    res = run("replay", *args)
    assert res.exit_code == 2 and says in text(res), res.output
    assert "database" not in text(res), "refused before connecting"


@pytest.mark.parametrize("cmd", [["dlq", "list"], ["dlq", "show", "1"]], ids=" ".join)
def test_dlq_takes_format_json_and_still_the_deprecated_json(cmd: list[str]) -> None:
    for fmt in ("json", "table"):
        res = run(*cmd, "--format", fmt)
        assert connected(res), res.output
        assert "deprecated" not in res.output
    res = run(*cmd, "--format", "xml")
    assert res.exit_code == 2 and "Invalid value for '--format'" in text(res), res.output
    res = run(*cmd, "--json")
    assert connected(res), res.output
    assert res.stderr.startswith("warning: --json is deprecated: use --format json\n"), res.stderr
    helptext = CliRunner().invoke(app, [*cmd, "--help"], env={"COLUMNS": "250"}).output
    assert "--format" in helptext and "--json" not in helptext
