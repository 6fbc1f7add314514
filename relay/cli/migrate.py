"""``outbox migrate upgrade | downgrade | sql | check | current``: our Alembic migrations, no ini file needed.

Exit codes: 0 done / up to date, 1 ``check`` found the database behind (or ahead of) this code, 2 could not run
(database unreachable, unknown or malformed revision), 3 configuration error (the URL, the schema name, the
version table's name; ``upgrade`` or ``downgrade`` of a schema whose revisions your own Alembic env records). The
database URL comes from ``--database-url`` or ``OUTBOX_DATABASE_URL`` and is checked by :mod:`relay.dburl` like
every command's; the schema from ``--schema`` or ``OUTBOX_SCHEMA`` (default ``outbox``). They are checked before
anything connects, so a bad setting is never hidden behind an unreachable database.

Where our revisions are recorded (the outbox schema's own version table, or the one of a host application that
runs them from its own Alembic env), and whether that is our head: :mod:`migrations.status`, which the relay's
start-up check asks too. ``--version-table`` / ``OUTBOX_VERSION_TABLE`` names the host's table when discovery
cannot find it.
"""

from __future__ import annotations

import io
from typing import Annotated

import sqlalchemy as sa
import typer
from alembic import command
from alembic.util import CommandError

from migrations import alembic_config
from migrations.status import Layout, SchemaState, SchemaStatus, VersionTable, schema_status
from outbox.config import Settings
from outbox.errors import ConfigError
from relay import dburl
from relay.causes import cause_lines
from relay.cli.ops_args import VersionTableOpt
from relay.logs import redact_text

EXIT_OK, EXIT_BEHIND, EXIT_COULD_NOT_RUN, EXIT_CONFIG = 0, 1, 2, 3
URL_NAME = "OUTBOX_DATABASE_URL (--database-url)"
_REVISION_FORMS = "`heads`, a revision id (e.g. 0001, ops_0002, base)"

DbUrl = Annotated[str, typer.Option("--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
                                    help="PostgreSQL URL of the outbox database, e.g. postgresql://user@host/db.")]
Schema = Annotated[str, typer.Option("--schema", envvar="OUTBOX_SCHEMA", show_envvar=True,
                                     help="Postgres schema of the outbox tables.")]
migrate_app = typer.Typer(name="migrate", help="Create and upgrade the outbox tables (Alembic).",
                          no_args_is_help=True)


def _settings(schema: str) -> str:
    try:
        return Settings(schema=schema).schema
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(text[0]) if text else ""


def _unreachable(exc: BaseException) -> bool:
    """A failed connect or a lost connection: psycopg raises those without a SQLSTATE, while the server's own
    OperationalErrors (a lock timeout, a cancelled statement) carry one."""
    orig = getattr(exc, "orig", None)
    return isinstance(exc, sa.exc.OperationalError) and getattr(orig, "sqlstate", None) is None


def _fail(exc: BaseException, code: int = EXIT_COULD_NOT_RUN) -> typer.Exit:
    if _unreachable(exc):
        orig = getattr(exc, "orig", None) or exc
        lines = [f"error: database unreachable: {_first_line(orig)}"]
    else:
        lines = [f"error: {type(exc).__name__}: {_first_line(exc)}"]
    typer.echo("\n".join([*lines, *cause_lines(exc, implicit=True)]), err=True)
    return typer.Exit(code)


def _url(url: str) -> str:
    """The checked psycopg 3 URL (relay/dburl.py); exit 3 with its message when it is missing or unusable."""
    try:
        return dburl.database_url(url, URL_NAME)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from exc


def _revision(revision: str, *, ranges: bool) -> str:
    """Reject what Alembic would answer with a traceback (``::::``, ``a:``, ``@``, an empty string) rather than a
    CommandError: exit 2, as for an unknown revision."""
    parts = revision.split(":")
    malformed = len(parts) > (2 if ranges else 1) or any(not p.strip() or not p.strip("@") for p in parts)
    if malformed:
        forms = (f"{_REVISION_FORMS} or `FROM:TO`" if ranges
                 else f"{_REVISION_FORMS}; `FROM:TO` is only for `outbox migrate sql`")
        raise typer.BadParameter(f"{revision!r} is not a revision: give {forms}", param_hint="REVISION")
    return revision


@migrate_app.command("upgrade")
def upgrade(revision: Annotated[str, typer.Argument(help="Target revision; 'heads' is every branch.")] = "heads",
            database_url: DbUrl = "", schema: Schema = "outbox", version_table: VersionTableOpt = "") -> None:
    """Apply migrations up to REVISION (default: heads)."""
    _revision(revision, ranges=False)
    cfg = alembic_config(_url(database_url), _settings(schema))
    _refuse_host_layout(database_url, schema, version_table, "upgrade", "alembic upgrade heads")
    try:
        command.upgrade(cfg, revision)
    except (sa.exc.SQLAlchemyError, CommandError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"schema {schema!r} upgraded to {revision}")


@migrate_app.command("downgrade")
def downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. 0001 or 'base' (drops all).")],
              database_url: DbUrl = "", schema: Schema = "outbox", version_table: VersionTableOpt = "") -> None:
    """Revert migrations down to REVISION."""
    _revision(revision, ranges=False)
    cfg = alembic_config(_url(database_url), _settings(schema))
    _refuse_host_layout(database_url, schema, version_table, "downgrade", f"alembic downgrade outbox@{revision}")
    try:
        command.downgrade(cfg, revision)
    except (sa.exc.SQLAlchemyError, CommandError) as exc:
        raise _fail(exc) from exc
    typer.echo(f"schema {schema!r} downgraded to {revision}")


def _refuse_host_layout(database_url: str, schema: str, version_table: str, verb: str, instead: str) -> None:
    """Exit 3 when a host application's Alembic env records our revisions: this command's own env would not see
    them, and would create (or drop) the outbox tables a second time."""
    st = _status(database_url, schema, version_table)
    if st.layout is Layout.HOST:
        typer.echo(f"error: our revisions in schema {schema!r} are {st.where}: run `{instead}` in that env "
                   f"instead (`outbox migrate {verb}` records its revisions in the outbox schema's own version "
                   "table and would find the tables already there)", err=True)
        raise typer.Exit(EXIT_CONFIG)


@migrate_app.command("sql")
def sql(revision: Annotated[str, typer.Argument(help="'heads', or 'FROM:TO' for an incremental script.")] = "heads",
        schema: Schema = "outbox") -> None:
    """Print the DDL (offline mode, no database needed) for a DBA to review or apply."""
    _revision(revision, ranges=True)
    buf = io.StringIO()
    cfg = alembic_config("postgresql+psycopg://", _settings(schema))
    cfg.output_buffer = buf
    try:
        command.upgrade(cfg, revision, sql=True)
    except CommandError as exc:
        raise _fail(exc) from exc
    typer.echo(buf.getvalue(), nl=False)


def _version_table(value: str) -> VersionTable | None:
    try:
        return VersionTable.parse(value) if value.strip() else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from exc


def _status(database_url: str, schema: str, version_table: str) -> SchemaStatus:
    # the settings before connecting: an unreachable database must not hide a bad one
    checked, named = _settings(schema), _version_table(version_table)
    engine = sa.create_engine(_url(database_url), poolclass=sa.pool.NullPool,
                              connect_args={"connect_timeout": 10, "application_name": "outbox-migrate"})
    try:
        with engine.connect() as conn:
            return schema_status(conn, checked, named)
    except sa.exc.SQLAlchemyError as exc:
        raise _fail(exc) from exc
    finally:
        engine.dispose()


@migrate_app.command("check")
def check(database_url: DbUrl = "", schema: Schema = "outbox", version_table: VersionTableOpt = "") -> None:
    """Exit 0 when the database is at head, 1 when it is behind (or ahead), 2 when it cannot be reached."""
    st = _status(database_url, schema, version_table)
    cur = ", ".join(st.current) or "(empty)"
    if st.state is SchemaState.UP_TO_DATE:
        typer.echo(f"schema {schema!r} is up to date ({cur}; {st.where})")
        return
    typer.echo(f"schema {schema!r} is {st.state.value}: database at {cur} ({st.where}), code at "
               f"{', '.join(st.heads)}; {st.upgrade_hint}", err=True)
    raise typer.Exit(EXIT_BEHIND)


@migrate_app.command("current")
def current(database_url: DbUrl = "", schema: Schema = "outbox", version_table: VersionTableOpt = "") -> None:
    """Print the revision(s) of ours applied to the database, and whether that is head; in the host layout,
    where they are recorded (on stderr)."""
    st = _status(database_url, schema, version_table)
    none = "run `outbox migrate upgrade`" if st.layout is Layout.OWN else st.upgrade_hint
    for rev in st.current or (f"(none: {none})",):
        typer.echo(f"{rev}{' (head)' if rev in st.heads else ''}")
    if st.layout is Layout.HOST:
        typer.echo(f"({st.where})", err=True)


def register(app: typer.Typer) -> None:
    """Add ``outbox migrate ...`` to ``app``."""
    app.add_typer(migrate_app, name="migrate")
