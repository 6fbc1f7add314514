"""Every command's database URL check (relay/dburl.py): bad URLs get a ConfigError that names the variable."""

from __future__ import annotations

import pytest

from outbox.errors import ConfigError
from relay.dburl import database_url


@pytest.mark.parametrize(("url", "says"), [
    ("", "is not set"),
    ("   ", "is not set"),
    (None, "is not set"),
    ("not a url", "is not a database URL"),
    ("postgresql://u@h:abc/db", "is not a database URL"),
    ("postgresql://u@[::1/db", "is not a database URL"),
    ("mysql://u@h/db", "must be a PostgreSQL URL"),
    ("sqlite:///tmp/x.db", "must be a PostgreSQL URL"),
    ("postgresql+psycopg2://u@h/db", "'psycopg2' driver is not supported"),
    ("postgresql+asyncpg://u@h/db", "'asyncpg' driver is not supported"),
    ("postgresql://u@h:99999/db", "port 99999 is out of range"),
    ("postgresql://u@h:0/db", "port 0 is out of range"),
])
def test_bad_urls_name_the_variable_and_what_to_give(url: str | None, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        database_url(url, "--database-url")
    assert says in str(e.value) and "--database-url" in str(e.value)


def test_a_password_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as e:
        database_url("mysql://u:s3cret@h/db")
    assert "s3cret" not in str(e.value)


@pytest.mark.parametrize(("url", "want"), [
    ("postgresql://u:p@h:5432/db?sslmode=require", "postgresql+psycopg://u:p@h:5432/db?sslmode=require"),
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
])
def test_good_urls_become_psycopg_3_urls(url: str, want: str) -> None:
    assert database_url(url) == want
