"""Operator commands: ``outbox replay``, ``outbox dlq list|show|retry|discard``, ``outbox prune``, ``outbox roles sql``.

Each command runs short transactions (one per batch) so it can run beside a live relay. Exit codes: 0 done,
1 some ids could not be acted on (not found / already resolved), 2 could not run (database, schema, bad
arguments), 3 configuration (the database URL, OUTBOX_SCHEMA, OUTBOX_SHARDS). Semantics are in
docs/operations.md.
"""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from migrations.status import Layout, VersionTable, schema_status
from outbox.errors import ConfigError, OutboxError, PermissionDeniedError
from outbox.schema import translate_map
from outbox.store import ops as store
from outbox.store import translate_errors
from outbox.store.prune import prune_batch, prune_plan
from outbox.store.roles import Role, role_name, roles_sql
from relay import dburl
from relay.causes import cause_lines
from relay.cli.ops_args import (
    BIGINT_MAX,
    SHARDS_DEFAULT,
    URL_NAME,
    Actor,
    DbUrl,
    Schema,
    Shards,
    VersionTableOpt,
    check_schema,
    parse_duration,
    parse_ids,
    parse_time,
    shard_count,
)
from relay.logs import redact_text

EXIT_OK, EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_CONFIG = 0, 1, 2, 3
console = Console(stderr=True, highlight=False)
# Piped or captured output gets a wide fixed width, so ids and reasons are not squeezed into 80 columns.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def actor_name(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


def sqlalchemy_url(url: str) -> str:
    """The checked psycopg 3 SQLAlchemy URL (:func:`relay.dburl.database_url`); ``ConfigError`` when unusable."""
    return dburl.database_url(url, URL_NAME)


def make_engine(url: str, schema: str) -> sa.Engine:
    """An engine for the ops commands; ``ConfigError`` (exit 3) for a bad schema name or database URL."""
    check_schema(schema)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool,
                              connect_args={"connect_timeout": 10, "application_name": "outbox-ops"})
    tm = translate_map(schema)
    return engine.execution_options(schema_translate_map=tm) if tm else engine


def fail(code: int, exc: BaseException) -> typer.Exit:
    """Print the error and its cause chain (one line each) on stderr; return the Exit to raise."""
    lines = [f"error: {redact_text(str(exc))}", *cause_lines(exc)]
    print("\n".join(lines), file=sys.stderr, flush=True)
    return typer.Exit(code)


def _with_grant_hint(exc: PermissionDeniedError) -> PermissionDeniedError:
    """Say which role's grants this command needs and how to get them, ahead of the database's own words."""
    hinted = PermissionDeniedError(
        f"the database role lacks a grant this command needs ({exc.denied}): apply `outbox roles sql` as the schema "
        f"owner (again after each `outbox migrate upgrade`) and grant the operator role "
        f"({role_name(Role.OPERATOR)} by default) to this login; see docs/security.md", denied=exc.denied)
    hinted.__cause__ = exc  # what `raise ... from exc` would set: fail() prints the chain
    return hinted


@contextmanager
def run_guard() -> Iterator[None]:
    """Map the library's errors to exit codes (3 config, 2 could not run)."""
    try:
        with translate_errors("talking to the outbox database"):  # e.g. a connect that fails
            yield
    except ConfigError as exc:
        raise fail(EXIT_CONFIG, exc) from exc
    except PermissionDeniedError as exc:
        # A missing grant is still "could not run" (exit 2, like any database error), with what to do about it.
        raise fail(EXIT_COULD_NOT_RUN, _with_grant_hint(exc)) from exc
    except OutboxError as exc:
        raise fail(EXIT_COULD_NOT_RUN, exc) from exc


def progress(what: str) -> Progress:
    return Progress(TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def run_batches(engine: sa.Engine, what: str, total: int, batch: Callable[[sa.Connection, int], list[int]]) -> int:
    """Call ``batch(conn, after_id)`` in its own transaction until it returns nothing; returns rows done."""
    done, after = 0, 0
    with progress(what) as bar:
        task = bar.add_task(what, total=total)
        while True:
            with engine.begin() as conn:
                ids = batch(conn, after)
            if not ids:
                break
            done, after = done + len(ids), ids[-1]
            bar.update(task, completed=min(done, total) if total else done, total=max(total, done))
    return done


def key_text(key: bytes | None) -> str:
    if key is None:
        return "∅"
    try:
        return key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()


def replay(
    *,
    database_url: DbUrl,
    schema: Schema = "outbox",
    from_id: Annotated[int | None, typer.Option("--from-id", min=1, max=BIGINT_MAX,
                                                help="First row id (inclusive).")] = None,
    to_id: Annotated[int | None, typer.Option("--to-id", min=1, max=BIGINT_MAX,
                                              help="Last row id (inclusive).")] = None,
    since: Annotated[str | None, typer.Option(help="Written at or after this ISO 8601 time or duration ago (2h).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Written before this ISO 8601 time or duration ago.")] = None,
    event_id: Annotated[list[str] | None, typer.Option("--event-id", help="An event id; repeatable.")] = None,
    topic: Annotated[str | None, typer.Option(help="Only events of this topic.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per transaction.")] = 1000,
    actor: Actor = None,
    shards: Shards = SHARDS_DEFAULT,
) -> None:
    """Re-publish already published events with their SAME event ids (see REPLAY_HELP)."""
    try:
        ids = tuple(uuid.UUID(e) for e in event_id or ())
    except ValueError as exc:
        raise typer.BadParameter(f"not an event id (UUID): {exc}", param_hint="--event-id") from exc
    if topic is not None and not topic.strip():
        raise typer.BadParameter("the topic is empty: give a topic name, or leave --topic out", param_hint="--topic")
    parse_ids(from_id, to_id)
    now = datetime.now(UTC)  # one "now" for both, so --since 2h --until 1h is exactly one hour
    start, end = parse_time(since, "--since", now), parse_time(until, "--until", now)
    if start is not None and end is not None and start >= end:
        raise typer.BadParameter(f"--since {since} is not before --until {until}: --since is inclusive and --until "
                                 "exclusive, so the window is empty", param_hint="--since/--until")
    sel = store.ReplaySelector(from_id, to_id, start, end, ids, topic)
    if sel.empty:
        raise typer.BadParameter("give at least one of --from-id, --to-id, --since, --until, --event-id, --topic")
    with run_guard():
        n_shards = shard_count(shards)
        engine = make_engine(database_url, schema)
        with engine.connect() as conn:
            plan = store.replay_plan(conn, sel)
            sample = store.replay_sample(conn, sel) if dry_run else []
            unknown = store.unknown_event_ids(conn, sel.event_ids)
        out.print(f"selector: {json.dumps(sel.to_json())}")
        for missing in unknown:  # named one by one, like `outbox dlq`'s unknown ids; they make the exit code 1
            out.print(f"event id {missing} not found (never written, or pruned)")
        out.print(f"replayable (published) rows: {plan.replayable}"
                  + (f"  ids {plan.first_id}..{plan.last_id}" if plan.replayable else "")
                  + f"; left alone: {plan.pending} still pending, {plan.dead} dead-lettered (use `outbox dlq`)")
        if dry_run:
            t = Table("id", title="first rows (dry run)")
            t.add_column("event id", no_wrap=True, min_width=36)
            for c in ("topic", "key", "seq", "published at"):
                t.add_column(c)
            for e in sample:
                t.add_row(str(e.id), str(e.event_id), e.topic, key_text(e.key), str(e.key_seq or ""),
                          str(e.published_at))
            out.print(t)
            out.print("dry run: nothing changed")
        elif plan.replayable == 0:
            out.print("nothing to replay")
        else:
            with engine.begin() as conn:
                audit_id = store.start_replay_audit(conn, actor_name(actor), sel)
            n = run_batches(engine, "replay", plan.replayable,
                            lambda c, after: store.replay_batch(c, sel, audit_id, after, batch_size,
                                                                shards=n_shards))
            out.print(f"re-queued {n} events for publication (replay_audit id {audit_id})")
    if unknown:
        raise typer.Exit(EXIT_CHECK_FAILED)


def prune(
    *,
    database_url: DbUrl,
    schema: Schema = "outbox",
    older_than: Annotated[str, typer.Option("--older-than", help="Retention: published longer ago than this "
                                                                  "(45s, 90m, 12h, 30d, 2w).")] = "7d",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows deleted per transaction.")] = 5000,
) -> None:
    """Delete published events past the retention that reconcile checkpoints cover (see PRUNE_HELP)."""
    cutoff = datetime.now(UTC) - parse_duration(older_than, "--older-than")
    with run_guard():
        engine = make_engine(database_url, schema)
        with engine.connect() as conn:
            plan = prune_plan(conn, cutoff)
        out.print(f"published before {cutoff.isoformat(timespec='seconds')}: {plan.eligible} covered by "
                  f"reconcile checkpoints (prunable), {plan.uncovered} not yet covered (kept)")
        if dry_run or plan.eligible == 0 or plan.id_ceiling is None:
            out.print("dry run: nothing deleted" if dry_run else "nothing to prune")
            return
        ceiling = plan.id_ceiling
        n = run_batches(engine, "prune", plan.eligible,
                        lambda c, after: prune_batch(c, cutoff, ceiling, after, batch_size))
        out.print(f"deleted {n} events")


REPLAY_HELP = (
    "Re-publish already published events with their SAME event ids, so inboxes deduplicate them. "
    "Criteria are ANDed. Rows are re-queued in place in id order, one batch per transaction, and the relay "
    "publishes them like new rows (per-key order: docs/operations.md). Every replay is audited in replay_audit "
    "(actor, selector, count, replayed id ranges)."
)
PRUNE_HELP = (
    "Delete published events past the retention, ONLY where a reconcile checkpoint of every consumer group "
    "subscribed to the event's topic covers the row, so the audit still stands. Batched, one transaction per "
    "batch: safe beside a running relay."
)
roles_app = typer.Typer(help="Least-privilege Postgres roles.", no_args_is_help=True)


@roles_app.command("sql")
def roles_sql_cmd(
    *,
    schema: Schema = "outbox",
    prefix: Annotated[str, typer.Option(help="Role name prefix: <prefix>_app, <prefix>_relay, ...")] = "outbox",
    role: Annotated[list[Role] | None, typer.Option("--role", help="Only these roles; repeatable.")] = None,
    version_table: VersionTableOpt = "",
    database_url: Annotated[str, typer.Option(
        "--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
        help="The outbox database, to find the version table there (without it and --version-table: "
             "<schema>.alembic_version, no database needed).")] = "",
) -> None:
    """Print idempotent DDL for the app, relay, consumer, auditor and operator roles (apply as schema owner)."""
    roles = tuple(role) if role else tuple(Role)
    try:
        check_schema(schema)
        table = _version_table(schema, version_table, database_url)
        sql = roles_sql(schema, prefix, roles, table)
    except ConfigError as exc:  # roles_sql() checks the prefix's length: name the flag
        raise fail(EXIT_CONFIG, ConfigError(str(exc).replace("prefix is", "--prefix is", 1))) from exc
    except ValueError as exc:  # roles_sql() raises ValueError for a bad identifier
        raise fail(EXIT_CONFIG, exc) from exc
    out.print(sql, markup=False, end="")


def _version_table(schema: str, named: str, database_url: str) -> tuple[str | None, str] | None:
    """The table recording our revisions, when it is not the outbox schema's own: ``--version-table`` as given,
    else what migrations.status finds in the database when there is a URL. None: the own table."""
    if named.strip():
        t = VersionTable.parse(named)  # ValueError naming OUTBOX_VERSION_TABLE: exit 3
        return t.schema, t.name
    if not database_url:
        return None
    engine = make_engine(database_url, schema)
    try:
        with run_guard(), engine.connect() as conn:
            st = schema_status(conn, schema)
    finally:
        engine.dispose()
    return (st.table.schema, st.table.name) if st.layout is Layout.HOST else None


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to ``app`` (``outbox dlq`` registers itself: relay.cli.ops_dlq)."""
    app.command("replay", help=REPLAY_HELP)(replay)
    app.command("prune", help=PRUNE_HELP)(prune)
    app.add_typer(roles_app, name="roles")


def _json_default(v: Any) -> str:
    return v.isoformat() if isinstance(v, datetime) else str(v)


def print_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, default=_json_default, indent=2))
