"""The relay's database session: what it sets on each connection, and whether each connection has a session of
its own (not a pooler in transaction mode that moves it between server connections).

Why the relay needs one (docs/operations.md, "PgBouncer"): each connection carries a session setting (below),
and the wake probe and the hot statements run as server-side prepared statements. A pooler in transaction or
statement mode (PgBouncer's ``pool_mode=transaction``/``statement``) hands each transaction whichever server
connection is free: the setting would leak to other clients of the pool and the prepared statements would be
missing, or clash with another client's of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from outbox.store.relay_leases import relay_db

# A relay frozen (SIGSTOP, VM pause) inside a mark transaction would hold row locks the shard's next owner needs
# for recovery: the server ends such a transaction after this long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 5000
_SETTINGS = f"SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_TIMEOUT_MS}"
_BACKEND = sa.select(sa.func.pg_backend_pid())


def keep_session_settings(engine: sa.Engine) -> None:
    """Apply the relay's session settings to each new connection of ``engine``.

    With ``SET`` after connecting rather than the ``options`` startup parameter: PgBouncer refuses a startup
    parameter it does not track ("unsupported startup parameter: options"), or with ``ignore_startup_parameters``
    drops it without a word. In session pooling the setting lasts as long as the relay's connection, and PgBouncer's
    ``server_reset_query`` (``DISCARD ALL``) clears it before the server connection serves anyone else."""
    sa.event.listen(engine, "connect", _apply_settings)


def _apply_settings(dbapi_conn: Any, _record: Any) -> None:
    with dbapi_conn.cursor() as cur:
        cur.execute(_SETTINGS)
    dbapi_conn.commit()  # a SET inside the driver's implicit transaction lasts only if that transaction commits


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """What :func:`check_session` saw. ``proxied``: the server process that runs the queries is not the one the
    driver was told about at login (a pooler stands between). ``own_session``: the connection kept its server
    process while it was idle and another connection ran a transaction meanwhile. ``said``: the pooler's refusal,
    if it refused the test transaction (statement pooling)."""

    proxied: bool
    own_session: bool
    said: str = ""


def check_session(engine: sa.Engine, trials: int = 10) -> SessionCheck:
    """Whether connections of ``engine`` get a session of their own, on connections made for the check alone.

    Direct to Postgres: one query says so (the backend pid the server reported at login is the one running it).
    Through a pooler: a first connection runs a statement and goes idle; a second one opens a transaction, which a
    transaction-mode pooler serves with the server connection just released (PgBouncer reuses the most recently
    used one first), then the first runs again. In session mode the first keeps its server process and the
    second never gets it; anything else is not a session of its own. Each trial uses a new second connection.
    Ten trials (a few milliseconds) caught transaction pooling 1,000 times out of 1,000 while four other clients
    kept the pool busy.
    ``engine`` should not be the relay's own: its connections are set up for a session (:func:`keep_session_settings`),
    which a transaction-mode pooler would leak to other clients; nor prepare statements (``prepare_threshold=None``)."""
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    with relay_db("checking that the relay's connections have sessions of their own"), auto.connect() as first:
        pid = int(first.execute(_BACKEND).scalar_one())
        told = getattr(first.connection.dbapi_connection, "info", None)
        if getattr(told, "backend_pid", None) == pid:
            return SessionCheck(proxied=False, own_session=True)
        for _ in range(trials):
            with engine.connect() as second:
                try:
                    other = int(second.execute(_BACKEND).scalar_one())  # inside a transaction: pinned until rollback
                except sa_exc.DBAPIError as exc:
                    first.execute(_BACKEND)  # still answering: the pooler refused the transaction, Postgres is up
                    return SessionCheck(proxied=True, own_session=False, said=str(exc.orig).strip())
                again = int(first.execute(_BACKEND).scalar_one())
                second.rollback()
            if other == pid or again != pid:
                return SessionCheck(proxied=True, own_session=False)
    return SessionCheck(proxied=True, own_session=True)
