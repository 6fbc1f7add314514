"""Start-up checks, each failing with a message that says what is wrong and what to do (exit code 2, or 3 for
a shard count that strands pending rows)."""

from __future__ import annotations

import logging

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrations import VERSION_TABLE, alembic_config
from outbox.errors import ConfigError, DatabaseUnavailableError, SchemaBehindError, StoreError
from outbox.store.relay import RelayStore

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


def check_privileges(store: RelayStore) -> None:
    """Refuse to start when the relay's role may not run the claim. A role granted before an upgrade lacks the
    tables the upgrade added (``outbox roles sql`` is re-applied by hand), and without this check every worker
    would retry a permission error forever instead of saying what to do."""
    try:
        store.probe_claim()
    except StoreError as exc:
        orig = getattr(exc.__cause__, "orig", None)
        if getattr(orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        raise ConfigError(
            f"the relay's database role may not read what it claims from ({orig}): apply `outbox roles sql` "
            f"again after `outbox migrate upgrade` (docs/operations.md, \"Least-privilege roles\")"
        ) from exc


def check_shards(store: RelayStore, shards: int) -> None:
    """Refuse to start while pending rows sit in shards ``>= shards``: a relay with this OUTBOX_SHARDS never
    claims them (they would wait forever, unnoticed). Raises ConfigError saying what to set."""
    s = store.stranded(shards)
    if not s.pending:
        return
    top = s.highest_shard if s.highest_shard is not None else shards
    rows = "1 pending row is" if s.pending == 1 else f"{s.pending} pending rows are"
    raise ConfigError(
        f"{rows} in shards >= OUTBOX_SHARDS={shards} (highest shard {top}), which no relay with this setting "
        f"claims: set OUTBOX_SHARDS back to the value the writers used (at least {top + 1}), let the backlog "
        f"drain (`outbox status`), then change it on writers and relays together "
        f"(docs/operations.md#changing-the-shard-count)"
    )


def _known(script: ScriptDirectory, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except Exception:  # alembic raises ResolutionError (and friends) for revisions it has never seen
        return False
