"""The relay behind a connection pooler: session pooling works, transaction and statement pooling are refused.

The relay holds a fixed pool of connections for its whole life (``OUTBOX_SHARDS`` + 4), keeps them busy, and
relies on each having a session of its own: a session setting that lets the server end a frozen relay's
transaction (``outbox.store.relay_session``), and server-side prepared statements for its hot statements and its
wake probe (~100 a second). A pooler in transaction mode would multiplex those connections onto as many server
connections anyway, so it saves nothing here and breaks both; the relay refuses it at start (exit 3) with a
message naming the fix, before it sets anything on a connection (a session setting made through a transaction
pooler would stay on a server connection other clients get next). docs/operations.md, "PgBouncer".
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from outbox.errors import DatabaseUnavailableError, PoolingModeError
from outbox.store.relay_session import SessionCheck, check_session
from relay import startup

# PgBouncer's words (to the client, and in its log) for a transaction under pool_mode = statement.
_STATEMENT_POOLING = re.compile(r"transaction blocks not allowed in statement pooling mode")
_FIX = ("connect the relay to Postgres directly, or through a pool in session mode (PgBouncer: pool_mode = session "
        "for the relay's database or user, with room for OUTBOX_SHARDS + 14 server connections per relay); "
        "docs/operations.md, \"PgBouncer\"")


def require_own_sessions(engine: sa.Engine) -> None:
    """Raise :class:`PoolingModeError` (exit 3) when ``engine``'s URL leads to a pooler that gives its connections
    no session of their own. The check runs on connections of its own (made, checked, closed); a database that
    does not answer, or refuses the login, is reported as :func:`relay.startup.check_database` reports it."""
    # No prepared statements: the check repeats one statement, which psycopg would prepare by the sixth time.
    probe = sa.create_engine(engine.url, poolclass=sa.pool.NullPool, connect_args={
        "connect_timeout": 10, "application_name": "outbox-relay", "prepare_threshold": None})
    try:
        try:
            startup.check_database(probe)
        except DatabaseUnavailableError as exc:
            # SQLAlchemy's first query on a connection runs in a transaction, which statement pooling refuses
            said = _STATEMENT_POOLING.search(str(exc))
            if said is None:
                raise
            seen = SessionCheck(proxied=True, own_session=False, said=said.group(0))
        else:
            seen = check_session(probe)
    finally:
        probe.dispose()
    if seen.own_session:
        return
    how = (f"it refused a transaction ({seen.said})" if seen.said else
           "a connection left idle lost its server connection to another client's transaction")
    raise PoolingModeError(
        f"OUTBOX_DATABASE_URL leads to a connection pooler in transaction or statement mode (PgBouncer "
        f"pool_mode = transaction/statement): {how}. The relay needs a session of its own on each connection: {_FIX}"
    )
