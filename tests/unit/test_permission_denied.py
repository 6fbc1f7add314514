"""SQLSTATE 42501 (insufficient_privilege) is decided once, in outbox.store.translate_errors, and its callers (the
relay's start-up checks, the ops commands) only rely on the type it raises."""

from __future__ import annotations

import psycopg.errors
import pytest
import sqlalchemy.exc as sa_exc
import typer

from outbox.errors import (
    ConfigError,
    DatabaseUnavailableError,
    PermissionDeniedError,
    SchemaBehindError,
    StoreError,
)
from outbox.store import translate_errors
from relay import startup
from relay.cli import ops


def _denied(text: str = "permission denied for table relay_requeue") -> sa_exc.ProgrammingError:
    orig = psycopg.errors.InsufficientPrivilege(text)
    wrapped = sa_exc.ProgrammingError("SELECT 1", {}, orig)
    wrapped.__cause__ = orig  # as SQLAlchemy raises it
    return wrapped


class _FakeDriverError(Exception):
    """Only what translate_errors looks at: a ``sqlstate``."""

    sqlstate = "42501"


def _raised(exc: BaseException) -> BaseException:
    with pytest.raises(StoreError) as caught, translate_errors("claiming"):
        raise exc
    return caught.value


def test_42501_becomes_permission_denied_naming_the_work_and_the_privilege() -> None:
    cause = _denied("permission denied for table relay_requeue\nLINE 1: SELECT ...")
    err = _raised(cause)
    assert type(err) is PermissionDeniedError and err.__cause__ is cause
    assert err.denied == "permission denied for table relay_requeue"
    assert str(err) == (
        "the database role lacks a privilege needed while claiming (permission denied for table "
        "relay_requeue); apply the grants printed by `outbox roles sql` (a migration adds none)"
    )


def test_the_sqlstate_decides_not_the_words() -> None:
    """A fake driver error with only a ``sqlstate``; and a missing grant whose words read like a missing table
    must not send the user to `outbox migrate upgrade`."""
    err = _raised(sa_exc.ProgrammingError("SELECT 1", {}, _FakeDriverError("no access to table event")))
    assert type(err) is PermissionDeniedError and err.denied == "no access to table event"
    assert type(_raised(_denied('permission denied: relation "event" does not exist'))) is PermissionDeniedError
    behind = sa_exc.ProgrammingError("SELECT 1", {}, psycopg.errors.UndefinedTable('relation "x" does not exist'))
    assert type(_raised(behind)) is SchemaBehindError
    other = sa_exc.ProgrammingError("SELECT 1", {}, psycopg.errors.SyntaxError("syntax error"))
    assert type(_raised(other)) is StoreError
    gone = sa_exc.OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))
    assert type(_raised(gone)) is DatabaseUnavailableError


def test_the_default_message_says_what_to_do() -> None:
    assert "outbox roles sql" in str(PermissionDeniedError())
    assert issubclass(PermissionDeniedError, StoreError)


class _Store:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def probe_claim(self) -> None:
        with translate_errors("claiming"):
            raise self.exc


def test_the_relay_refuses_to_start_without_its_grant_and_says_what_to_do() -> None:
    with pytest.raises(
        ConfigError,
        match=r"\(permission denied for table relay_requeue\): apply `outbox roles sql` "
        r"again after `outbox migrate upgrade`",
    ) as caught:
        startup.check_privileges(_Store(_denied()))  # type: ignore[arg-type]
    assert isinstance(caught.value.__cause__, PermissionDeniedError)
    with pytest.raises(StoreError) as other:  # any other database error is left to the caller
        syntax = sa_exc.ProgrammingError("x", {}, psycopg.errors.SyntaxError("s"))
        startup.check_privileges(_Store(syntax))  # type: ignore[arg-type]
    assert type(other.value) is StoreError


def test_an_ops_command_without_its_grant_exits_2_with_the_hint_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as caught, ops.run_guard():
        raise _denied("permission denied for table dead_letter")
    assert caught.value.exit_code == ops.EXIT_COULD_NOT_RUN
    first, *chain = capsys.readouterr().err.splitlines()
    assert first == (
        "error: the database role lacks a grant this command needs (permission denied for table "
        "dead_letter): apply `outbox roles sql` as the schema owner (again after each `outbox migrate "
        "upgrade`) and grant the operator role (outbox_operator by default) to this login; see "
        "docs/security.md"
    )
    assert [line.split(":")[0] for line in chain] == [
        "  caused by PermissionDeniedError",
        "  caused by ProgrammingError",
        "  caused by InsufficientPrivilege",
    ]
