"""The database URLs users give every command, checked once and turned into the psycopg 3 SQLAlchemy URL.

Every command (relay, status, migrate, replay, prune, dlq, reconcile, trace) goes through :func:`database_url`, so
a bad URL gets the same ``ConfigError`` everywhere instead of whatever the driver lookup or the socket layer
raises (a ``ModuleNotFoundError`` for ``mysql://``, ``invalid literal for int()`` for a bad port). Messages never
echo the URL: it may hold a password.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from outbox.errors import ConfigError

_EXAMPLE = "postgresql://user:password@host:5432/dbname"


def psycopg_url(url: str) -> str:
    """The psycopg 3 driver whatever spelling the user gave; query parameters (sslmode...) pass through."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def parse(url: str | None, name: str = "OUTBOX_DATABASE_URL") -> URL:
    """The parsed URL, or a ``ConfigError`` naming ``name`` (the variable or flag) and what to give instead."""
    if not url or not url.strip():
        raise ConfigError(f"{name} is not set: give a PostgreSQL URL such as {_EXAMPLE}")
    try:
        u = make_url(psycopg_url(url.strip()))
        port = u.port
    except (ArgumentError, ValueError):
        # make_url raises ValueError for a port that is not a number ("h:abc", "[::1" without its bracket).
        raise ConfigError(f"{name} is not a database URL (check the scheme, the host and a numeric port); "
                          f"expected {_EXAMPLE}") from None
    backend, _, driver = u.drivername.partition("+")
    if backend != "postgresql":
        raise ConfigError(f"{name} must be a PostgreSQL URL such as {_EXAMPLE}, got a {backend!r} URL")
    if driver != "psycopg":
        raise ConfigError(f"{name}: the {driver!r} driver is not supported here; use postgresql:// (psycopg 3)")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is out of range (1-65535)")
    return u


def database_url(url: str | None, name: str = "OUTBOX_DATABASE_URL") -> str:
    """:func:`parse`, rendered back (password included) for ``sqlalchemy.create_engine``."""
    return parse(url, name).render_as_string(hide_password=False)
