"""Arguments of the operator commands: option types and the parsing/validation of what users type.

Split from relay/cli/ops.py (which re-exports these names). Usage errors (``typer.BadParameter``) exit 2;
configuration (OUTBOX_SCHEMA, OUTBOX_SHARDS) raises ``ConfigError`` and exits 3.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer

from outbox.config import DEFAULT_SHARDS, IDENT_PATTERN, MAX_IDENT, MAX_SHARDS
from outbox.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# A century is beyond any retention, and keeps ``now - duration`` inside what datetime can represent.
MAX_DURATION = timedelta(days=36500)
BIGINT_MAX = 2**63 - 1  # row and dead-letter ids are bigint: a larger id would only fail in the database
URL_NAME = "OUTBOX_DATABASE_URL (--database-url)"
_SCHEMA = re.compile(IDENT_PATTERN)

DbUrl = Annotated[str, typer.Option("--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
                                    help="PostgreSQL URL of the outbox database (TLS: add ?sslmode=verify-full"
                                         "&sslrootcert=/path/ca.pem).")]
Schema = Annotated[str, typer.Option("--schema", envvar="OUTBOX_SCHEMA", show_envvar=True,
                                     help="Postgres schema of the outbox tables.")]
Actor = Annotated[str | None, typer.Option("--actor", help="Who to record in the audit (default: the OS user).")]
# Text, checked by shard_count(): OUTBOX_SHARDS is configuration, so a bad value exits 3 with a message naming
# it, as `outbox relay` and `outbox status` do (typer's own range check would exit 2 with a usage error).
Shards = Annotated[str, typer.Option(
    "--shards", envvar="OUTBOX_SHARDS", show_envvar=True, metavar="<int>",
    help=f"The shard count writers and relays use now (1-{MAX_SHARDS}): a re-queued row goes to its key's "
         "shard under it.")]
SHARDS_DEFAULT = str(DEFAULT_SHARDS)


def parse_duration(text: str, flag: str | None = None) -> timedelta:
    """``45s``, ``90m``, ``12h``, ``30d``, ``2w``: more than zero, at most :data:`MAX_DURATION`.

    Errors are usage errors (exit 2) that name ``flag`` when given.
    """
    m = _DURATION.match(text)
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration like 45s, 90m, 12h, 30d or 2w", param_hint=flag)
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    # Compare as floats first: timedelta() itself overflows (OverflowError) on a huge or infinite count.
    if seconds > MAX_DURATION.total_seconds():
        raise typer.BadParameter(f"{text!r} is too long: at most {MAX_DURATION.days}d (100 years)",
                                 param_hint=flag)
    d = timedelta(seconds=seconds)
    if d <= timedelta(0):  # "0d", or a fraction of a microsecond
        raise typer.BadParameter(f"{text!r} is not longer than zero: give a duration like 30d", param_hint=flag)
    return d


def parse_time(text: str | None) -> datetime | None:
    """ISO 8601; a time without an offset is UTC."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time (2026-11-22T10:00:00Z)") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_ids(from_id: int | None, to_id: int | None) -> None:
    """Reject an inverted id range: it selects nothing, which is never what the operator meant."""
    if from_id is not None and to_id is not None and from_id > to_id:
        raise typer.BadParameter(f"--from-id {from_id} is after --to-id {to_id}: the range is inclusive, "
                                 "give the lower id first", param_hint="--from-id/--to-id")


def check_schema(schema: str) -> str:
    """``schema`` when it is a plain SQL identifier Postgres keeps whole; else a ``ConfigError`` saying why."""
    if not _SCHEMA.match(schema):
        raise ConfigError(f"OUTBOX_SCHEMA must be a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*), got {schema!r}")
    if len(schema) > MAX_IDENT:
        raise ConfigError(f"OUTBOX_SCHEMA is {len(schema)} characters long: at most {MAX_IDENT}")
    return schema


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
