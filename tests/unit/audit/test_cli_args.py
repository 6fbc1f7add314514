"""`outbox reconcile | trace | verify` refuse bad arguments with exit 2, named by flag, before connecting.

The database URL points at a closed port: had a command connected before checking its arguments, the output
would say "database unavailable" instead of naming the argument. Nothing here needs Postgres or Kafka.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outbox.errors import ConfigError, ReconcileError
from outbox.reconcile import Options, seal
from outbox.reconcile.config import MAX_ID, check_window, check_writable, parse_time, seconds
from relay.cli import app

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/x"
runner = CliRunner()


def outbox_cli(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args), env={"COLUMNS": "250", "OUTBOX_REPORT_HMAC_KEY": ""})
    return res.exit_code, res.output


@pytest.mark.parametrize(("args", "says"), [
    # an empty or inverted window used to be "zero loss proven — 0 events", exit 0
    (["--from-id", "10", "--to-id", "5"], "--from-id (10) is after --to-id (5)"),
    (["--since", "1h", "--until", "2h"], "is after --until ("),
    (["--since", "2026-01-01T00:00:00Z", "--until", "2026-01-01T00:00:00Z"], "is the same time as --until"),
    (["--from-id", "99999999999999999999999"], f"--from-id must be between 1 and {MAX_ID}"),
    (["--to-id", "0"], "--to-id must be between 1 and"),
    # numbers that overflowed or were accepted as nonsense
    (["--since", "999999999d"], "--since: a duration ago must be at most 36500d"),
    (["--until", "yesterday"], "--until: expected an ISO time"),
    (["--grace", "nan"], "--grace must be between 0 and 3153600000 seconds (100 years), got nan"),
    (["--stuck-after", "inf"], "--stuck-after must be between 0 and"),
    (["--grace", "1e20"], "--grace must be between 0 and"),
    (["--grace", "-1"], "--grace must be between 0 and"),
    (["--jobs", "0"], "--jobs must be between 1 and 64, got 0"),
    (["--jobs", "-1"], "--jobs must be between 1 and 64, got -1"),
    (["--cap", "-1"], "--cap must be between 0 and 1000000, got -1"),
    # report paths, checked before a run that may take minutes
    (["-o", "/proc/x/out.json"], "cannot write the report to /proc/x/out.json (--output): directory /proc/x does"),
    (["-o", "/tmp"], "cannot write the report to /tmp (--output): it is a directory"),
    (["--html", "/tmp"], "cannot write the report to /tmp (--html): it is a directory"),
    (["--html", "/proc/x/r.html"], "cannot write the report to /proc/x/r.html (--html)"),
])
def test_reconcile_names_the_bad_flag_and_exits_2_before_connecting(args: list[str], says: str) -> None:
    code, out = outbox_cli("reconcile", "--database-url", UNREACHABLE, *args)
    assert code == 2 and says in out, out
    assert "unavailable" not in out and "Traceback" not in out and "Options(" not in out, out


@pytest.mark.parametrize(("flag", "url", "says"), [
    ("--database-url", "postgresql://u@h:abc/db", "--database-url (OUTBOX_DATABASE_URL) is not a database URL"),
    ("--database-url", "mysql://u:s3cret@h/db", "--database-url (OUTBOX_DATABASE_URL) must be a PostgreSQL URL"),
    ("--database-url", "sqlite:///tmp/x.db", "must be a PostgreSQL URL"),
    ("--inbox-database-url", "mysql://u@h/db", "--inbox-database-url must be a PostgreSQL URL"),
    ("--scratch-database-url", "postgresql://u@h:99999/db", "--scratch-database-url: port 99999 is out of range"),
])
def test_reconcile_checks_every_database_url(flag: str, url: str, says: str) -> None:
    args = [flag, url] if flag == "--database-url" else ["--database-url", UNREACHABLE, flag, url]
    code, out = outbox_cli("reconcile", *args)
    assert code == 2 and says in out, out
    assert "s3cret" not in out and "MySQLdb" not in out and "int()" not in out


def test_several_inbox_urls_are_named_by_position() -> None:
    code, out = outbox_cli("reconcile", "--database-url", UNREACHABLE, "--inbox-database-url", UNREACHABLE,
                           "--inbox-database-url", "postgres://u@h:x/db")
    assert code == 2 and "--inbox-database-url #2 is not a database URL" in out, out


def test_an_environment_url_is_checked_too() -> None:
    res = runner.invoke(app, ["reconcile"], env={"OUTBOX_DATABASE_URL": "mysql://u@h/db", "COLUMNS": "250"})
    assert res.exit_code == 2 and "(OUTBOX_DATABASE_URL) must be a PostgreSQL URL" in res.output, res.output


@pytest.mark.parametrize(("args", "says"), [
    (["1", "--database-url", "postgresql://u@h:abc/db"], "--database-url (OUTBOX_DATABASE_URL) is not a database"),
    (["1", "--database-url", UNREACHABLE, "--inbox-database-url", "sqlite://"], "--inbox-database-url must be"),
    (["--database-url", UNREACHABLE, "--", "-1"], "row ids are positive integers, 1 to 9223372036854775807"),
    (["0", "--database-url", UNREACHABLE], "row ids are positive integers"),
    ([str(MAX_ID + 1), "--database-url", UNREACHABLE], "row ids are positive integers"),
    (["not-an-id", "--database-url", UNREACHABLE], "'not-an-id' is neither an event id (UUID) nor an outbox row"),
])
def test_trace_names_bad_arguments_and_exits_2(args: list[str], says: str) -> None:
    code, out = outbox_cli("trace", *args)
    assert code == 2 and says in out, out


@pytest.mark.parametrize("inbox", [False, True])
def test_trace_with_an_unreachable_database_could_not_run(inbox: bool) -> None:
    # Exit 1 means "unknown event": an unreachable database must not look like one.
    args = ["--database-url", UNREACHABLE] + (["--inbox-database-url", UNREACHABLE] if inbox else [])
    code, out = outbox_cli("trace", "42", *args)
    assert code == 2 and "database unavailable while tracing" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize(("content", "says"), [
    (b"[" * 100_000 + b"]" * 100_000, "is not a JSON report (nested too deeply)"),
    (b"hello", "is not a JSON report (Expecting value: line 1 column 1"),
    (b"\xff\xfe\xfa", "is not a JSON report (not UTF-8 text)"),
    (b"[1, 2]", "is not a reconcile report (a JSON list, not an object)"),
    (b'"report"', "is not a reconcile report (a JSON str, not an object)"),
])
def test_verify_a_file_that_is_not_a_report_could_not_verify(tmp_path: Path, content: bytes, says: str) -> None:
    f = tmp_path / "r.json"
    f.write_bytes(content)
    code, out = outbox_cli("verify", str(f))
    assert code == 2 and f"{f} {says}" in out.replace("\n", ""), out
    assert "Traceback" not in out and "cannot read" not in out


def test_verify_a_missing_file(tmp_path: Path) -> None:
    code, out = outbox_cli("verify", str(tmp_path / "nope.json"))
    assert code == 2 and "cannot read" in out and "No such file or directory" in out, out


def test_verify_still_reads_a_report_written_as_utf8(tmp_path: Path) -> None:
    f = tmp_path / "r.json"
    f.write_text(json.dumps(seal({"verdict_line": "verdict: zero loss proven — 3 events"}), ensure_ascii=False),
                 encoding="utf-8")
    code, out = outbox_cli("verify", str(f))
    assert code == 0 and "zero loss proven — 3 events" in out, out


@pytest.mark.parametrize(("kw", "says"), [
    ({"from_id": 10, "to_id": 5}, "from_id (10) is after to_id (5)"),
    ({"since": datetime(2026, 1, 2, tzinfo=UTC), "until": datetime(2026, 1, 1, tzinfo=UTC)}, "since (2026-01-02"),
    ({"to_id": MAX_ID + 1}, "to_id must be between 1 and"),
    ({"grace": timedelta(seconds=-1)}, "grace must be between 0 and"),
    ({"stuck_after": timedelta(days=999_999)}, "stuck_after must be between 0 and"),
    ({"jobs": 0}, "jobs must be between 1 and 64, got 0"),
    ({"cap": -1}, "cap must be between 0 and 1000000, got -1"),
    ({"sub_bits": 16}, "need 0 < sub_bits (16) < bucket_bits (16) <= 40"),
])
def test_library_options_name_the_bad_field(kw: dict[str, object], says: str) -> None:
    with pytest.raises(ReconcileError) as e:
        Options(**kw)  # type: ignore[arg-type]
    assert says in str(e.value) and "Options(" not in str(e.value)


def test_limits_accept_their_edges() -> None:
    check_window(1, 1, None, None)
    check_window(1, MAX_ID, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert seconds(0, "--grace") == timedelta(0)
    assert seconds(3_153_600_000, "--grace") == timedelta(days=36_500)
    assert Options(from_id=5, to_id=5, jobs=64, cap=0).jobs == 64
    ago = parse_time("36500d", "--since")  # ~99.9 years: comparing years failed every December
    assert ago is not None and abs(datetime.now(UTC) - timedelta(days=36_500) - ago) < timedelta(minutes=1)


def test_parse_time_errors_are_config_errors_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--until: expected an ISO time"):
        parse_time("2h ago", "--until")


def test_a_writable_path_passes_and_a_character_device_is_not_a_directory(tmp_path: Path) -> None:
    check_writable(tmp_path / "new.json", "--output")
    check_writable(None, "--output")
    check_writable(Path("/dev/full"), "--output")  # writable here; the write itself fails (test_cli.py)
    with pytest.raises(ConfigError, match="does not exist"):
        check_writable(tmp_path / "missing" / "r.json", "--output")
