"""The relay waker's probe (relay/wake.py): which rows committed since the last look, on a connection of its own.

It runs ~100 times a second per relay instance, so it bypasses the pool and SQLAlchemy's execution path: through
them each probe cost ~0.4 ms of Python under the GIL (py-spy, 10 % of the relay's GIL samples during a drain);
straight through a kept psycopg cursor with prepared statements it is a few tens of microseconds. Both reads
walk the primary key's newest entries only.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from outbox.errors import ConfigError, DatabaseUnavailableError


class NewRowsProbe:
    def __init__(self, engine: sa.Engine, schema: str = "outbox") -> None:
        self._engine = engine
        # schema is a validated identifier (outbox.config / relay.config), so quoting it is enough
        table = f'"{schema}".event'
        self._newest = f"SELECT coalesce(max(id), 0) FROM {table}"
        self._after = f"SELECT id, shard FROM {table} WHERE id > %s ORDER BY id LIMIT %s"
        self._conn: sa.PoolProxiedConnection | None = None
        self._cur: psycopg.Cursor[tuple[int, ...]] | None = None

    def newest_id(self) -> int:
        """The highest committed event id (0 for an empty table)."""
        rows = self._run(self._newest, ())
        return int(rows[0][0])

    def rows_after(self, after: int, limit: int) -> list[tuple[int, int]]:
        """``(id, shard)`` of up to ``limit`` committed rows with ``id > after``, in id order."""
        return [(int(i), int(s)) for i, s in self._run(self._after, (after, limit))]

    def close(self) -> None:
        conn, self._conn, self._cur = self._conn, None, None
        if conn is not None:
            conn.invalidate()  # never back to the pool: it is in autocommit

    def _run(self, sql: str, args: tuple[int, ...]) -> list[tuple[int, ...]]:
        try:
            cur = self._cursor()
            cur.execute(sql, args, prepare=True)
            return cur.fetchall()
        except (psycopg.Error, sa.exc.DBAPIError) as exc:
            self.close()  # a fresh connection next time
            raise DatabaseUnavailableError(f"database unavailable while probing for new rows: {exc}") from exc

    def _cursor(self) -> psycopg.Cursor[tuple[int, ...]]:
        if self._cur is None:
            conn = self._engine.raw_connection()
            raw = conn.driver_connection
            if not isinstance(raw, psycopg.Connection):
                conn.close()
                raise ConfigError("the relay's wake probe needs the psycopg (3) driver: postgresql+psycopg://...")
            raw.autocommit = True
            self._conn, self._cur = conn, raw.cursor()
        return self._cur
