"""install() names what it accepts when given anything else (it never installs on a class: that would be global)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

import outbox
from outbox.errors import SessionStateError
from outbox.orm import installed


@pytest.mark.parametrize(
    ("target", "named"),
    [
        (sa.create_engine("sqlite://"), "got Engine"),
        (None, "got NoneType"),
        (Session, "got the class Session"),
        (sessionmaker, "got the class sessionmaker"),
        (AsyncSession, "got the class AsyncSession"),
        (async_sessionmaker, "got the class async_sessionmaker"),
        ("SessionLocal", "got str"),
    ],
)
def test_install_rejects_what_it_cannot_hook(target: object, named: str) -> None:
    with pytest.raises(SessionStateError, match=rf"install\(\) takes a Session, sessionmaker.*{named}"):
        outbox.install(target)  # type: ignore[arg-type]
    assert not installed(Session())
