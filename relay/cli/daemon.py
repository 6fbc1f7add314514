"""``outbox relay`` (the daemon) and ``outbox status`` (backlog, leases, DLQ, held keys).

Flags override the environment (docs/relay.md lists every variable; not every one has a flag, and
relay.config.RELAY_FLAGS must list those that do). Exit codes of ``outbox relay`` (relay/app.py): 0 ok (also
SIGTERM while waiting for the database or Kafka at start, which it waits for rather than exiting), 2 could not
run (port taken, OUTBOX_RELAY_STARTUP_WAIT_S ran out) or a usage error typer reports (unknown flag,
non-numeric value), 3 bad configuration, 130 second signal. ``outbox status``: 2 when the database is
unreachable.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from relay.cli.ops_args import Format
from relay.config_values import Compression


def _kafka_config(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k.strip():
            raise typer.BadParameter(f"expected key=value, got {p!r}", param_hint="--kafka-config")
        out[k.strip()] = v
    return out


def relay_command(  # noqa: PLR0917 - typer maps each parameter to a flag
    database_url: Annotated[str | None, typer.Option(help="OUTBOX_DATABASE_URL")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="KAFKA_BOOTSTRAP_SERVERS")] = None,
    schema: Annotated[str | None, typer.Option(help="OUTBOX_SCHEMA")] = None,
    shards: Annotated[int | None, typer.Option(help="OUTBOX_SHARDS (must match the writers)")] = None,
    instance_id: Annotated[str | None, typer.Option(help="OUTBOX_RELAY_INSTANCE_ID")] = None,
    batch_size: Annotated[int | None, typer.Option(help="OUTBOX_RELAY_BATCH_SIZE")] = None,
    lease_ttl_s: Annotated[float | None, typer.Option(help="OUTBOX_RELAY_LEASE_TTL_S")] = None,
    heartbeat_s: Annotated[float | None, typer.Option(help="OUTBOX_RELAY_HEARTBEAT_S")] = None,
    transactional_id_prefix: Annotated[str | None, typer.Option(help="OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX")] = None,
    checkpoint_topic: Annotated[str | None, typer.Option(help="OUTBOX_RELAY_CHECKPOINT_TOPIC")] = None,
    compression: Annotated[Compression | None, typer.Option(help="OUTBOX_RELAY_COMPRESSION")] = None,
    linger_ms: Annotated[int | None, typer.Option(help="OUTBOX_RELAY_LINGER_MS")] = None,
    http_port: Annotated[int | None, typer.Option(help="OUTBOX_RELAY_HTTP_PORT (0 any, -1 none)")] = None,
    drain_deadline_s: Annotated[float | None, typer.Option(help="OUTBOX_RELAY_DRAIN_DEADLINE_S")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="OUTBOX_RELAY_MAX_ATTEMPTS")] = None,
    log_level: Annotated[str | None, typer.Option(help="OUTBOX_RELAY_LOG_LEVEL")] = None,
    kafka_config: Annotated[list[str] | None, typer.Option(
        "--kafka-config", help="extra librdkafka setting key=value (repeatable), e.g. security.protocol=SASL_SSL",
    )] = None,
) -> None:
    """Run the relay: publish committed outbox rows to Kafka exactly once, until SIGTERM/SIGINT."""
    from relay.app import main

    overrides: dict[str, Any] = {
        "database_url": database_url, "bootstrap_servers": bootstrap_servers, "db_schema": schema,
        "shards": shards, "instance_id": instance_id, "batch_size": batch_size, "lease_ttl_s": lease_ttl_s,
        "heartbeat_s": heartbeat_s, "transactional_id_prefix": transactional_id_prefix,
        "checkpoint_topic": checkpoint_topic, "compression": compression, "linger_ms": linger_ms,
        "http_port": http_port, "drain_deadline_s": drain_deadline_s, "max_attempts": max_attempts,
        "log_level": log_level,
    }
    raise typer.Exit(main(overrides, _kafka_config(kafka_config or [])))


def status_command(
    database_url: Annotated[str | None, typer.Option(help="OUTBOX_DATABASE_URL")] = None,
    schema: Annotated[str | None, typer.Option(help="OUTBOX_SCHEMA")] = None,
    shards: Annotated[int | None, typer.Option(help="OUTBOX_SHARDS of the relays (flags rows beyond it)")] = None,
    format: Annotated[Format, typer.Option("--format", help="table or json")] = Format.TABLE,
) -> None:
    """Show the backlog per shard, the oldest unpublished age, leases, instances, DLQ count and held keys.

    Pending rows in shards >= OUTBOX_SHARDS are flagged as stranded: no relay with that setting claims them."""
    import sqlalchemy as sa

    from outbox.errors import ConfigError, OutboxError
    from outbox.store.relay import RelayStore
    from relay.app import EXIT_CONFIG, EXIT_COULD_NOT_RUN, fail
    from relay.config import StatusSettings
    from relay.status import PROG_STATUS, render_table, to_json

    try:
        s = StatusSettings.load({"database_url": database_url, "db_schema": schema, "shards": shards})
    except ConfigError as exc:
        raise typer.Exit(fail(EXIT_CONFIG, "configuration error", exc, prog=PROG_STATUS)) from None
    engine = sa.create_engine(s.sqlalchemy_url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 10})
    try:
        st = RelayStore(engine, s.db_schema).status(s.shards)
    except OutboxError as exc:
        raise typer.Exit(fail(EXIT_COULD_NOT_RUN, "cannot read status", exc, prog=PROG_STATUS)) from None
    finally:
        engine.dispose()
    if format is Format.JSON:
        typer.echo(json.dumps(to_json(st), indent=2, default=str))
    else:
        render_table(st)


def register(app: typer.Typer) -> None:
    """Add ``relay`` and ``status`` to the ``outbox`` CLI."""
    app.command("relay")(relay_command)
    app.command("status")(status_command)
