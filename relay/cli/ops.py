"""Operator commands: ``outbox replay``, ``outbox dlq list|show|retry|discard``, ``outbox prune``, ``outbox roles sql``.

Each command runs short transactions (one per batch) so it can run beside a live relay. Exit codes: 0 done,
1 some ids could not be acted on (not found / already resolved), 2 could not run (database, schema), 3 bad
arguments or configuration. Semantics are in docs/operations.md.
"""

from __future__ import annotations

import getpass
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from outbox.config import DEFAULT_SHARDS, MAX_SHARDS
from outbox.errors import ConfigError, OutboxError
from outbox.schema import translate_map
from outbox.store import ops as store
from outbox.store import translate_errors
from outbox.store.roles import Role, roles_sql

EXIT_OK, EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_CONFIG = 0, 1, 2, 3
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

DbUrl = Annotated[str, typer.Option("--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
                                    help="SQLAlchemy URL of the outbox database (TLS: add ?sslmode=verify-full"
                                         "&sslrootcert=/path/ca.pem).")]
Schema = Annotated[str, typer.Option("--schema", envvar="OUTBOX_SCHEMA", show_envvar=True,
                                     help="Postgres schema of the outbox tables.")]
Actor = Annotated[str | None, typer.Option("--actor", help="Who to record in the audit (default: the OS user).")]
Shards = Annotated[int, typer.Option(
    "--shards", envvar="OUTBOX_SHARDS", show_envvar=True, min=1, max=MAX_SHARDS,
    help="The shard count writers and relays use now: a re-queued row goes to its key's shard under it.")]

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


def parse_duration(text: str) -> timedelta:
    """``45s``, ``90m``, ``12h``, ``30d``, ``2w``."""
    m = _DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 45s, 90m, 12h, 30d or 2w")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601; a time without an offset is UTC."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time (2026-11-22T10:00:00Z)") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def sqlalchemy_url(url: str) -> str:
    """The psycopg 3 driver whatever spelling the user gave; query parameters (sslmode...) pass through."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, schema: str) -> sa.Engine:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", schema):
        raise ConfigError(f"OUTBOX_SCHEMA must be a plain SQL identifier, got {schema!r}")
    try:
        engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.NullPool,
                                  connect_args={"connect_timeout": 10, "application_name": "outbox-ops"})
    except (sa.exc.ArgumentError, ValueError) as exc:
        # The URL itself may hold a password: never echo it.
        raise ConfigError("OUTBOX_DATABASE_URL is not a valid SQLAlchemy URL") from exc
    tm = translate_map(schema)
    return engine.execution_options(schema_translate_map=tm) if tm else engine


def fail(code: int, exc: BaseException) -> typer.Exit:
    """Print the error and its cause chain (one line each) on stderr; return the Exit to raise."""
    from relay.logs import redact_text

    lines = [f"error: {redact_text(str(exc))}"]
    cause = exc.__cause__
    while cause is not None:
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        lines.append(f"  caused by {type(cause).__name__}: {redact_text(first)}")
        cause = cause.__cause__
    print("\n".join(lines), file=sys.stderr, flush=True)
    return typer.Exit(code)


@contextmanager
def run_guard() -> Iterator[None]:
    """Map the library's errors to exit codes (3 config, 2 could not run)."""
    try:
        with translate_errors("talking to the outbox database"):  # e.g. a connect that fails
            yield
    except ConfigError as exc:
        raise fail(EXIT_CONFIG, exc) from exc
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
    from_id: Annotated[int | None, typer.Option("--from-id", help="First row id (inclusive).")] = None,
    to_id: Annotated[int | None, typer.Option("--to-id", help="Last row id (inclusive).")] = None,
    since: Annotated[str | None, typer.Option(help="Written at or after this ISO 8601 time.")] = None,
    until: Annotated[str | None, typer.Option(help="Written before this ISO 8601 time.")] = None,
    event_id: Annotated[list[str] | None, typer.Option("--event-id", help="An event id; repeatable.")] = None,
    topic: Annotated[str | None, typer.Option(help="Only events of this topic.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per transaction.")] = 1000,
    actor: Actor = None,
    shards: Shards = DEFAULT_SHARDS,
) -> None:
    """Re-publish already published events with their SAME event ids (see REPLAY_HELP)."""
    try:
        ids = tuple(uuid.UUID(e) for e in event_id or ())
    except ValueError as exc:
        raise typer.BadParameter(f"not an event id (UUID): {exc}", param_hint="--event-id") from exc
    sel = store.ReplaySelector(from_id, to_id, parse_time(since), parse_time(until), ids, topic)
    if sel.empty:
        raise typer.BadParameter("give at least one of --from-id, --to-id, --since, --until, --event-id, --topic")
    with run_guard():
        engine = make_engine(database_url, schema)
        with engine.connect() as conn:
            plan = store.replay_plan(conn, sel)
            sample = store.replay_sample(conn, sel) if dry_run else []
        out.print(f"selector: {json.dumps(sel.to_json())}")
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
            return
        if plan.replayable == 0:
            out.print("nothing to replay")
            return
        with engine.begin() as conn:
            audit_id = store.start_replay_audit(conn, actor_name(actor), sel)
        n = run_batches(engine, "replay", plan.replayable,
                        lambda c, after: store.replay_batch(c, sel, audit_id, after, batch_size, shards=shards))
        out.print(f"re-queued {n} events for publication (replay_audit id {audit_id})")


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
    cutoff = datetime.now(UTC) - parse_duration(older_than)
    with run_guard():
        engine = make_engine(database_url, schema)
        with engine.connect() as conn:
            plan = store.prune_plan(conn, cutoff)
        out.print(f"published before {cutoff.isoformat(timespec='seconds')}: {plan.eligible} covered by "
                  f"reconcile checkpoints (prunable), {plan.uncovered} not yet covered (kept)")
        if dry_run or plan.eligible == 0 or plan.id_ceiling is None:
            out.print("dry run: nothing deleted" if dry_run else "nothing to prune")
            return
        ceiling = plan.id_ceiling
        n = run_batches(engine, "prune", plan.eligible,
                        lambda c, after: store.prune_batch(c, cutoff, ceiling, after, batch_size))
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
) -> None:
    """Print idempotent DDL for the app, relay, consumer, auditor and operator roles (apply as schema owner)."""
    try:
        out.print(roles_sql(schema, prefix, tuple(role) if role else tuple(Role)), markup=False, end="")
    except ValueError as exc:
        raise fail(EXIT_CONFIG, exc) from exc


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to ``app``."""
    from relay.cli import ops_dlq  # it imports this module's helpers

    app.command("replay", help=REPLAY_HELP)(replay)
    app.command("prune", help=PRUNE_HELP)(prune)
    app.add_typer(ops_dlq.build(), name="dlq")
    app.add_typer(roles_app, name="roles")


def _json_default(v: Any) -> str:
    return v.isoformat() if isinstance(v, datetime) else str(v)


def print_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, default=_json_default, indent=2))
