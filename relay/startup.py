"""Start-up checks, each failing with a message that says what is wrong and what to do (exit code 2)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrations import VERSION_TABLE, alembic_config
from outbox.errors import DatabaseUnavailableError, SchemaBehindError

log = logging.getLogger("relay.startup")


def check_database(engine: sa.Engine) -> None:
    try:
        with engine.connect() as c:
            c.execute(sa.select(1))
    except sa_exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"the database at {engine.url.render_as_string(hide_password=True)} is unreachable: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc


def check_schema(engine: sa.Engine, schema: str) -> None:
    """Refuse to run on a schema behind this code: every migration head must be applied."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False)))
    heads = set(script.get_heads())
    try:
        with engine.connect() as c:
            ctx = MigrationContext.configure(c, opts={"version_table": VERSION_TABLE,
                                                      "version_table_schema": schema})
            current = set(ctx.get_current_heads())
    except sa_exc.DBAPIError as exc:
        raise DatabaseUnavailableError(f"could not read the schema version: {exc.orig}") from exc
    if heads <= current:
        return
    unknown = {r for r in current if not _known(script, r)}
    if unknown:
        log.warning("the database schema is newer than this relay", extra={"db": sorted(current)})
        return
    raise SchemaBehindError(
        f"the outbox schema {schema!r} is behind this relay (applied {sorted(current) or 'nothing'}, "
        f"needs {sorted(heads)}); run `outbox migrate upgrade` first"
    )


def _known(script: ScriptDirectory, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except Exception:  # alembic raises ResolutionError (and friends) for revisions it has never seen
        return False
