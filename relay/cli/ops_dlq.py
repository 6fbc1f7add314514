"""``outbox dlq list | show <id> | retry <id>... | discard <id>...``: the dead-letter queue, with each reason.

A dead letter holds its key: the key's later rows stay pending until an operator acts. ``retry`` makes the row
pending again (fresh attempts) and resolves the dead letter, so the row is published first and the held rows
follow in order; ``discard`` resolves it without publishing and releases the key.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.table import Table

from outbox.config import DEFAULT_SHARDS
from outbox.store import dead_letters as store
from relay.cli.ops import EXIT_CHECK_FAILED, actor_name, key_text, make_engine, out, print_json, run_guard
from relay.cli.ops_args import (
    BIGINT_MAX,
    SHARDS_DEFAULT,
    Actor,
    DbUrl,
    Format,
    FormatOpt,
    Schema,
    Shards,
    shard_count,
)

# A larger --limit is a typo, not a listing anyone reads; unchecked, a huge one fails in Postgres (bigint LIMIT).
MAX_LIMIT = 100_000
# `--format json`, as every other command spells it; `--json` (its earlier spelling) still works, hidden.
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="Deprecated: use --format json.")]
# Dead-letter ids are bigint: checked here, so an impossible id is a usage error naming the argument rather
# than a "bigint out of range" from the database.
Ids = Annotated[list[int], typer.Argument(min=1, max=BIGINT_MAX, metavar="ID",
                                          help="Dead-letter ids (from `outbox dlq list`).")]


def _as_json(format: Format, json_alias: bool) -> bool:
    if json_alias:
        print("warning: --json is deprecated: use --format json", file=sys.stderr, flush=True)
    return json_alias or format is Format.JSON


def _doc(d: store.DeadLetter) -> dict[str, Any]:
    doc = asdict(d)
    doc["key"] = key_text(d.key) if d.key is not None else None
    doc["resolution"] = d.resolution.value if d.resolution else None
    doc["detail"] = {k: (v if not isinstance(v, bytes) else v.hex()) for k, v in d.detail.items()}
    return doc


def list_cmd(*, database_url: DbUrl, schema: Schema = "outbox",
             all_: Annotated[bool, typer.Option("--all", help="Include resolved dead letters.")] = False,
             topic: Annotated[str | None, typer.Option(help="Only this topic.")] = None,
             limit: Annotated[int, typer.Option(min=1, max=MAX_LIMIT, help="At most this many.")] = 100,
             format: FormatOpt = Format.TABLE, json_alias: JsonAlias = False) -> None:
    """List open dead letters (oldest first) with their reason and how many rows of the key they hold."""
    as_json = _as_json(format, json_alias)
    if topic is not None and not topic.strip():
        raise typer.BadParameter("the topic is empty: give a topic name, or leave --topic out", param_hint="--topic")
    with run_guard(), make_engine(database_url, schema).connect() as conn:
        rows = store.list_dead_letters(conn, include_resolved=all_, topic=topic, limit=limit)
    if as_json:
        print_json([_doc(d) for d in rows])
        return
    t = Table("id", title="dead letters")
    t.add_column("event id", no_wrap=True, min_width=36)
    for c in ("topic", "key", "seq", "tries", "failed at", "held", "state", "reason"):
        t.add_column(c)
    for d in rows:
        state = d.resolution.value if d.resolution else "open"
        t.add_row(str(d.id), str(d.event_id), d.topic, key_text(d.key), str(d.key_seq or ""), str(d.attempts),
                  d.failed_at.isoformat(timespec="seconds"), str(d.held_behind), state,
                  f"{d.error_class}: {d.reason}"[:120])
    out.print(t)
    if not rows:
        out.print("no dead letters" if all_ else "no open dead letters")


def show_cmd(*, dl_id: Annotated[int, typer.Argument(min=1, max=BIGINT_MAX, metavar="ID", help="Dead-letter id.")],
             database_url: DbUrl, schema: Schema = "outbox", format: FormatOpt = Format.TABLE,
             json_alias: JsonAlias = False) -> None:
    """Show one dead letter: the full reason, the event row's state, and the rows of its key held behind it."""
    as_json = _as_json(format, json_alias)
    with run_guard(), make_engine(database_url, schema).connect() as conn:
        d = store.get_dead_letter(conn, dl_id)
    if d is None:
        out.print(f"dead letter {dl_id} not found")
        raise typer.Exit(EXIT_CHECK_FAILED)
    doc = _doc(d)
    if as_json:
        print_json(doc)
        return
    detail = doc.pop("detail")
    for k, v in [*doc.items(), *detail.items()]:
        out.print(f"[bold]{k:>16}[/bold]  {v}")


def _resolve(ids: list[int], how: store.Resolution, database_url: str, schema: str, actor: str | None, *,
             shards: str) -> None:
    who, failed = actor_name(actor), 0
    with run_guard():
        n_shards = shard_count(shards)
        engine = make_engine(database_url, schema)
        for dl_id in ids:
            with engine.begin() as conn:  # one transaction per id: a bad id does not undo the others
                res = store.resolve_dead_letter(conn, dl_id, how, who, shards=n_shards)
            failed += res is not store.ResolveOutcome.DONE
            verb = "retried" if how is store.Resolution.RETRIED else "discarded"
            out.print(f"dead letter {dl_id}: {verb if res is store.ResolveOutcome.DONE else res.value}")
    if failed:
        raise typer.Exit(EXIT_CHECK_FAILED)


def retry_cmd(*, ids: Ids, database_url: DbUrl, schema: Schema = "outbox", actor: Actor = None,
              shards: Shards = SHARDS_DEFAULT) -> None:
    """Re-queue the dead-lettered events (fresh attempts) ahead of their key's held rows; resolve as 'retried'."""
    _resolve(ids, store.Resolution.RETRIED, database_url, schema, actor, shards=shards)


def discard_cmd(*, ids: Ids, database_url: DbUrl, schema: Schema = "outbox", actor: Actor = None) -> None:
    """Give up on the events (never published) and release their keys; resolve as 'discarded'."""
    # discard re-queues nothing, so it takes no --shards
    _resolve(ids, store.Resolution.DISCARDED, database_url, schema, actor, shards=str(DEFAULT_SHARDS))


def build() -> typer.Typer:
    app = typer.Typer(help="Dead letters: list, show, retry, discard (each with its reason).", no_args_is_help=True)
    app.command("list")(list_cmd)
    app.command("show")(show_cmd)
    app.command("retry")(retry_cmd)
    app.command("discard")(discard_cmd)
    return app


def register(app: typer.Typer) -> None:
    """Add ``outbox dlq`` to ``app``."""
    app.add_typer(build(), name="dlq")
