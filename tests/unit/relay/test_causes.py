"""relay.causes.cause_lines: the cause chain every command prints, and the four first lines kept around it."""

from __future__ import annotations

import pytest
import sqlalchemy.exc as sa_exc
import typer

from outbox.errors import StoreError
from relay import app, causes
from relay.cli import audit, migrate, ops

PW = "S3cret-Pa55"


def _chained() -> StoreError:
    """What translate_errors raises: ours, from SQLAlchemy's (three lines), from the driver's."""
    driver = ConnectionError(f"connection to postgresql://u:{PW}@db:5432/x failed\nDETAIL: more")
    wrapped = sa_exc.OperationalError("SELECT 1", {}, driver)
    wrapped.__cause__ = driver
    top = StoreError("database unavailable while claiming")
    top.__cause__ = wrapped
    return top


def test_one_line_per_cause_nearest_first_and_redacted() -> None:
    lines = causes.cause_lines(_chained())
    assert lines == [
        "  caused by OperationalError: (builtins.ConnectionError) connection to postgresql://u:***@db:5432/x failed",
        "  caused by ConnectionError: connection to postgresql://u:***@db:5432/x failed",
    ]


def test_no_cause_no_lines_and_an_empty_message_is_an_empty_line() -> None:
    assert causes.cause_lines(ValueError("alone")) == []
    top = ValueError("top")
    top.__cause__ = ValueError("  \n ")
    assert causes.cause_lines(top) == ["  caused by ValueError: "]


def test_implicit_context_only_when_asked_and_only_for_the_first_step() -> None:
    inner = KeyError("inner")
    inner.__context__ = ValueError("deeper")
    outer = RuntimeError("outer")
    outer.__context__ = inner  # what raising inside `except KeyError:` without `from` sets
    assert causes.cause_lines(outer) == []
    assert causes.cause_lines(outer, implicit=True) == ["  caused by KeyError: 'inner'"]


def test_a_looping_chain_ends() -> None:
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert causes.cause_lines(a) == ["  caused by ValueError: b", "  caused by ValueError: a"]


# The four printers keep their own first line; the chain below it is cause_lines'.
EXPECTED_CHAIN = causes.cause_lines(_chained())


def test_relay_fail_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert app.fail(2, "database unreachable", _chained(), detail="last librdkafka error: boom") == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "outbox relay: database unreachable: database unavailable while claiming",
        *EXPECTED_CHAIN,
        "  last librdkafka error: boom",
    ]


def test_ops_fail_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert ops.fail(2, _chained()).exit_code == 2
    assert capsys.readouterr().err.splitlines() == ["error: database unavailable while claiming", *EXPECTED_CHAIN]


def test_migrate_fail_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert migrate._fail(_chained()).exit_code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: StoreError: database unavailable while claiming",
        *EXPECTED_CHAIN,
    ]


def test_audit_fail_format(capsys: pytest.CaptureFixture[str]) -> None:
    exit_ = audit.fail(_chained(), 2)
    assert isinstance(exit_, typer.Exit) and exit_.exit_code == 2
    words = capsys.readouterr().err.split()  # Rich wraps at the console's width
    assert words == " ".join(["error: database unavailable while claiming", *EXPECTED_CHAIN]).split()
