"""The only SQL in kafka-outbox, one module per side of the system.

* ``store.write``     enqueue: key sequences and event rows, in the caller's transaction
* ``store.relay``     claim, mark, dead-letter, leases, instances, status
* ``store.inbox``     consumer-side acknowledgements (inbox rows) and subscriptions
* ``store.audit``     reconciler digests, drill-down, checkpoints, trace
* ``store.audit_copies`` reconciler: copies from other Kafka positions, audited replays
* ``store.ops``       replay, and the re-queue helpers it shares with ``store.dead_letters``
* ``store.dead_letters`` DLQ management: list, show, retry, discard
* ``store.prune``     retention: delete published rows every subscribed group's checkpoint covers

Driver errors are translated here, once, by :func:`translate_errors`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy.exc as sa_exc

from outbox.errors import (
    DatabaseUnavailableError,
    PermissionDeniedError,
    PoolingModeError,
    SchemaBehindError,
    StoreError,
)

_INSUFFICIENT_PRIVILEGE = "42501"  # SQLSTATE
# A server-side prepared statement the driver made is missing on, or already taken on, the server connection:
# only a pooler that moves the client between server connections does that (the library never PREPAREs in SQL).
_PREPARED_STATEMENT_LOST = {"26000": "missing", "42P05": "taken by another client"}


@contextmanager
def translate_errors(doing: str) -> Iterator[None]:
    """Re-raise SQLAlchemy/psycopg errors as the library's tree, keeping the cause chained.

    ``doing`` completes "while ...": what was being done, in the words the user should read."""
    try:
        yield
    except sa_exc.TimeoutError as exc:  # the pool, not the database: every connection stayed checked out
        raise DatabaseUnavailableError(
            f"no database connection became free in the pool while {doing} ({exc}); raise pool_size or "
            "pool_timeout, or hold connections for less time"
        ) from exc
    except sa_exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable while {doing}: {exc.orig}") from exc
    except sa_exc.ProgrammingError as exc:
        msg = str(exc.orig)
        # Decided here, once, by SQLSTATE: a missing grant also reads "permission denied for table ...", and it
        # must not pass for a schema that is behind, since no migration adds a grant.
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in _PREPARED_STATEMENT_LOST:
            raise PoolingModeError(
                f"a prepared statement of this connection is {_PREPARED_STATEMENT_LOST[sqlstate]} on the server "
                f"while {doing} ({msg.strip()}): the connection goes through a pooler in transaction mode "
                "(PgBouncer pool_mode=transaction) that keeps no prepared statements. Writers: create the engine "
                "with connect_args={'prepare_threshold': None}, or on PgBouncer 1.21+ set max_prepared_statements "
                "(docs/write-side.md, \"Behind PgBouncer\"); the relay and the outbox commands: connect directly "
                "or through session pooling (docs/operations.md, \"PgBouncer\"). The transaction is aborted: roll "
                "it back") from exc
        if sqlstate == _INSUFFICIENT_PRIVILEGE:
            denied = (msg.strip().splitlines() or ["permission denied"])[0]
            raise PermissionDeniedError(
                f"the database role lacks a privilege needed while {doing} ({denied}); apply the grants printed "
                "by `outbox roles sql` (a migration adds none)", denied=denied) from exc
        if "does not exist" in msg and ("relation" in msg or "column" in msg or "schema" in msg):
            raise SchemaBehindError(
                f"the outbox schema is missing or behind while {doing} ({msg.strip()}); "
                "run `outbox migrate upgrade`"
            ) from exc
        raise StoreError(f"database error while {doing}: {msg}") from exc
    except sa_exc.DBAPIError as exc:
        raise StoreError(f"database error while {doing}: {exc.orig}") from exc
