"""outbox.timeparse: the one parser behind `outbox prune --older-than`, `outbox replay --since/--until` and
`outbox reconcile --since/--until`; each CLI adds its flag to the message and keeps its exit code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from outbox.errors import ConfigError, OutboxError
from outbox.timeparse import MAX_DURATION, TimeParseError, parse_duration, parse_time
from relay.cli import app

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("12h", timedelta(hours=12)),
        ("30d", timedelta(days=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 7 d ", timedelta(days=7)),
        ("36500d", MAX_DURATION),
        ("5214w", timedelta(weeks=5214)),
    ],
)
def test_durations_in_every_unit(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a duration like 45s, 90m, 12h, 30d or 2w"),
        ("   ", "is not a duration"),
        ("7", "is not a duration"),
        ("d", "is not a duration"),
        ("3 days", "is not a duration"),
        ("-1d", "is not a duration"),
        ("+1d", "is not a duration"),
        ("1e3s", "is not a duration"),
        ("nan", "is not a duration"),
        ("nand", "is not a duration"),
        ("infs", "is not a duration"),
        ("1D", "is not a duration"),
        ("1y", "is not a duration"),
        (".5d", "is not a duration"),
        ("\u0663d", "is not a duration"),  # ARABIC-INDIC DIGIT THREE: float() would take it
        ("36501d", "is too long: at most 36500d (100 years)"),
        ("5215w", "is too long"),
        ("99999999999w", "is too long"),
        ("9" * 400 + "s", "is too long"),  # float inf, not an OverflowError
        ("0d", "is not longer than zero: give a duration like 30d"),
        ("0.0000001s", "is not longer than zero"),
    ],
)
def test_bad_durations_say_why_and_quote_the_text(text: str, says: str) -> None:
    with pytest.raises(TimeParseError) as e:
        parse_duration(text)
    assert says in str(e.value) and repr(text) in str(e.value)


def test_the_error_is_a_config_error_in_the_one_tree() -> None:
    assert issubclass(TimeParseError, ConfigError) and issubclass(TimeParseError, OutboxError)


@pytest.mark.parametrize("now", [None, NOW])
def test_iso_times_are_aware_and_naive_ones_are_utc(now: datetime | None) -> None:
    assert parse_time("2026-11-22T10:00:00", now) == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert parse_time("2026-11-22T10:00:00Z", now) == parse_time("2026-11-22T11:00:00+01:00", now)
    plus_one = parse_time(" 2026-11-22T11:00:00+01:00 ", now)
    assert plus_one.utcoffset() == timedelta(hours=1) and plus_one.tzinfo == timezone(timedelta(hours=1))
    assert parse_time("2026-11-22", now) == datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2h ago", "2026-13-01", "2026-11-22Z", "2026-11-22T10:00z", "nan", "-1d", "1e3s"]
)
def test_bad_times_say_which_forms_are_accepted(text: str) -> None:
    with pytest.raises(TimeParseError, match="is not an ISO 8601 time") as e:
        parse_time(text)
    assert repr(text) in str(e.value)
    with pytest.raises(TimeParseError, match=r"expected an ISO time .* or a duration ago like 2h, got") as e:
        parse_time(text, NOW)
    assert repr(text) in str(e.value)


def test_a_duration_is_a_time_only_when_now_is_given() -> None:
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2w", NOW) == NOW - timedelta(weeks=2)
    assert parse_time("0s", NOW) == NOW  # zero ago is now: `--until 0s`
    with pytest.raises(TimeParseError, match="is not an ISO 8601 time"):
        parse_time("2h")


@pytest.mark.parametrize("text", ["36501d", "5215w", "9" * 400 + "s"])
def test_a_duration_ago_is_at_most_a_century(text: str) -> None:
    with pytest.raises(TimeParseError, match=r"a duration ago must be at most 36500d \(100 years\), got"):
        parse_time(text, NOW)
    assert parse_time("36500d", NOW) == NOW - MAX_DURATION


def test_a_duration_before_the_calendar_is_an_error_not_an_overflow() -> None:
    early = datetime(50, 1, 1, tzinfo=UTC)
    with pytest.raises(TimeParseError, match="before the year 1"):
        parse_time("2700w", early)  # 51.7 years


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_time("2h", datetime(2026, 11, 22))


def test_reconcile_now_takes_weeks_too() -> None:
    """Reconcile took s/m/h/d only; both CLIs take the same units now. An inverted window proves both parsed."""
    res = CliRunner().invoke(
        app,
        ["reconcile", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x", "--since", "1w", "--until", "2w"],
        env={"COLUMNS": "250", "OUTBOX_REPORT_HMAC_KEY": ""},
    )
    assert res.exit_code == 2 and "--since (" in res.output and "is after --until (" in res.output, res.output


def test_each_cli_names_its_own_flag() -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["reconcile", "--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/x", "--until", "2y"],
        env={"COLUMNS": "250", "OUTBOX_REPORT_HMAC_KEY": ""},
    )
    assert res.exit_code == 2 and "--until: expected an ISO time" in res.output, res.output
    res = runner.invoke(
        app, ["prune", "--older-than", "2y", "--database-url", "postgresql://o@127.0.0.1:1/o"], env={"COLUMNS": "250"}
    )
    assert res.exit_code == 2 and "--older-than" in res.output and "'2y' is not a duration" in res.output, res.output
