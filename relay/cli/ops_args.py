"""Arguments of the operator commands: option types and the parsing/validation of what users type.

Split from relay/cli/ops.py (which re-exports these names). Usage errors (``typer.BadParameter``) exit 2;
configuration (OUTBOX_SCHEMA, OUTBOX_SHARDS) raises ``ConfigError`` and exits 3.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated

import typer

from migrations.status import VERSION_TABLE_VAR
from outbox import timeparse
from outbox.config import DEFAULT_SHARDS, MAX_IDENT, MAX_SHARDS, is_identifier
from outbox.errors import ConfigError

BIGINT_MAX = 2**63 - 1  # row and dead-letter ids are bigint: a larger id would only fail in the database
URL_NAME = "OUTBOX_DATABASE_URL (--database-url)"

DbUrl = Annotated[str, typer.Option("--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
                                    help="PostgreSQL URL of the outbox database (TLS: add ?sslmode=verify-full"
                                         "&sslrootcert=/path/ca.pem).")]
Schema = Annotated[str, typer.Option("--schema", envvar="OUTBOX_SCHEMA", show_envvar=True,
                                     help="Postgres schema of the outbox tables.")]
# Checked by migrations.status.VersionTable.parse (exit 3 naming the variable).
VersionTableOpt = Annotated[str, typer.Option(
    "--version-table", envvar=VERSION_TABLE_VAR, show_envvar=True, metavar="[SCHEMA.]TABLE",
    help="The version table recording our revisions when your own Alembic env runs them (default: found in the "
         "database: the outbox schema's own, else an alembic_version on the search path or in public that "
         "records one of ours).")]
Actor = Annotated[str | None, typer.Option("--actor", help="Who to record in the audit (default: the OS user).")]


class Format(Enum):
    """``--format``: a table on the terminal, or JSON on stdout for scripts."""

    TABLE = "table"
    JSON = "json"


FormatOpt = Annotated[Format, typer.Option("--format", help="table (terminal) or json (stdout, machine-readable).")]
# Text, checked by shard_count(): OUTBOX_SHARDS is configuration, so a bad value exits 3 with a message naming
# it, as `outbox relay` and `outbox status` do (typer's own range check would exit 2 with a usage error).
Shards = Annotated[str, typer.Option(
    "--shards", envvar="OUTBOX_SHARDS", show_envvar=True, metavar="<int>",
    help=f"The shard count writers and relays use now (1-{MAX_SHARDS}): a re-queued row goes to its key's "
         "shard under it.")]
SHARDS_DEFAULT = str(DEFAULT_SHARDS)


def parse_duration(text: str, flag: str | None = None) -> timedelta:
    """``45s``, ``90m``, ``12h``, ``30d``, ``2w``: more than zero, at most 100 years
    (:mod:`outbox.timeparse`). Errors are usage errors (exit 2) that name ``flag`` when given.
    """
    try:
        return timeparse.parse_duration(text)
    except timeparse.TimeParseError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from exc


def parse_time(text: str | None, flag: str | None = None, now: datetime | None = None) -> datetime | None:
    """ISO 8601 (UTC without an offset) or a duration before ``now`` (``2h``; default: the current time), the
    forms ``outbox reconcile --since/--until`` take (:mod:`outbox.timeparse`). An error is a usage error (exit 2)
    that names ``flag`` when given.
    """
    if text is None:
        return None
    try:
        return timeparse.parse_time(text, now or datetime.now(UTC))
    except timeparse.TimeParseError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from exc


def parse_ids(from_id: int | None, to_id: int | None) -> None:
    """Reject an inverted id range: it selects nothing, which is never what the operator meant."""
    if from_id is not None and to_id is not None and from_id > to_id:
        raise typer.BadParameter(f"--from-id {from_id} is after --to-id {to_id}: the range is inclusive, "
                                 "give the lower id first", param_hint="--from-id/--to-id")


def check_schema(schema: str) -> str:
    """``schema`` when it is a plain SQL identifier Postgres keeps whole; else a ``ConfigError`` saying why."""
    if is_identifier(schema):
        return schema
    if len(schema) > MAX_IDENT and is_identifier(schema[:MAX_IDENT]):  # well formed, only too long
        raise ConfigError(f"OUTBOX_SCHEMA is {len(schema)} characters long: at most {MAX_IDENT}")
    raise ConfigError(f"OUTBOX_SCHEMA must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*), got {schema!r}")


def shard_count(text: str) -> int:
    """OUTBOX_SHARDS / ``--shards`` as an int in 1..MAX_SHARDS, or a ``ConfigError`` naming it."""
    try:
        n = int(text.strip())
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"OUTBOX_SHARDS (--shards) must be an integer from 1 to {MAX_SHARDS}, got {text!r}: "
                          "use the shard count writers and relays use now")
    return n
