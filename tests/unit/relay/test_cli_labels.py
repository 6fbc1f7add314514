"""`outbox status` speaks as itself, not as `outbox relay`; exit code 2 also covers typer's usage errors, as
docs/relay.md says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from outbox.store.relay import Status
from relay.app import EXIT_CONFIG, EXIT_COULD_NOT_RUN, fail
from relay.cli import app
from relay.cli.daemon import status_command
from relay.status import render_table

DOC = (Path(__file__).resolve().parents[3] / "docs" / "relay.md").read_text()


def test_status_table_title_says_outbox_status() -> None:
    console = Console(record=True, width=120)
    render_table(Status(backlog=(), leases=(), instances=(), dead_letters_open=0, held_keys=()), console)
    text = console.export_text()
    assert "outbox status: shards" in text and "outbox relay" not in text, text


def test_status_configuration_error_says_outbox_status(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://h/d")
    with pytest.raises(typer.Exit) as exc:
        status_command(schema="s" * 64)
    assert exc.value.exit_code == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("outbox status: configuration error: bad status configuration: OUTBOX_SCHEMA"), err
    assert "outbox relay" not in err


def test_fail_redacts_what_drivers_quote(capsys: pytest.CaptureFixture[str]) -> None:
    cause = RuntimeError("connecting to postgresql://u:hunter2@h/db failed")
    exc = ValueError("bad")
    exc.__cause__ = cause
    assert fail(EXIT_COULD_NOT_RUN, "database unreachable", exc) == EXIT_COULD_NOT_RUN
    err = capsys.readouterr().err
    assert err.startswith("outbox relay: database unreachable: bad") and "hunter2" not in err, err


@pytest.mark.parametrize("args", [["relay", "--shards", "abc"], ["relay", "--concurrency", "1"]])
def test_usage_errors_exit_2_and_the_exit_code_table_says_so(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env={"OUTBOX_DATABASE_URL": "postgresql://h/d",
                                                "KAFKA_BOOTSTRAP_SERVERS": "k:1"})
    assert result.exit_code == 2, result.output
    table = DOC.split("## Exit codes", 1)[1].split("\n\n", 2)[1]
    assert re.search(r"^\| 2 \| usage error.*unknown flag, non-numeric value", table, re.M), table
