"""stack.pgbouncer finds PgBouncer or says how to get it: the suite's PgBouncer tests fail with that, never skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import pgbouncer
from stack.process import StackError


def test_a_missing_pgbouncer_without_root_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGBOUNCER", raising=False)
    monkeypatch.setattr(pgbouncer, "find_pgbouncer", lambda: None)
    monkeypatch.setattr(pgbouncer.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match=r"run `apt-get install -y pgbouncer` as root .* or .* set PGBOUNCER"):
        pgbouncer.resolve_pgbouncer()


def test_pgbouncer_given_by_path_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGBOUNCER", str(tmp_path / "nope"))
    with pytest.raises(StackError, match=r"PGBOUNCER=.* is not a file"):
        pgbouncer.resolve_pgbouncer()
    binary = tmp_path / "pgbouncer"
    binary.write_text("#!/bin/sh\necho 'PgBouncer 1.23.1'\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PGBOUNCER", str(binary))
    assert pgbouncer.resolve_pgbouncer() == binary
    assert pgbouncer.pgbouncer_version(binary) == (1, 23)


def test_a_pool_mode_pgbouncer_lacks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="pool_mode 'sessions'"):
        pgbouncer.PgBouncer("postgresql+psycopg://postgres@127.0.0.1:5432/x", tmp_path, "sessions",
                            binary=tmp_path / "pgbouncer")
