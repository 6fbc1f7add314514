"""``outbox relay``: validate, check the world, then run the supervisor until SIGTERM/SIGINT.

Exit codes: 0 stopped cleanly (also after the drain deadline), 2 could not start (database unreachable, schema
behind, Kafka unreachable, HTTP port taken; typer's usage errors too), 3 bad configuration (also: librdkafka
refuses a setting, OUTBOX_SHARDS below the shard of a pending row, a database role or Kafka principal without
the rights it needs), 130 second signal (immediate exit).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import sqlalchemy as sa

from outbox.errors import ConfigError, OutboxError, SchemaBehindError
from outbox.store.relay import RelayStore
from relay import logs, startup
from relay.causes import cause_lines
from relay.config import RelaySettings

EXIT_OK, EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_CONFIG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger("relay")


def fail(code: int, what: str, exc: BaseException, prog: str = "outbox relay", detail: str | None = None) -> int:
    """Print the error with its cause chain (one line each), and ``detail`` if any, on stderr; return ``code``.

    Redacted like the logs: a driver's words may quote a setting's value (a URL, a librdkafka setting)."""
    lines = [logs.redact_text(f"{prog}: {what}: {exc}"), *cause_lines(exc)]
    if detail:
        lines.append(logs.redact_text(f"  {detail}"))
    print("\n".join(lines), file=sys.stderr, flush=True)
    return code


def main(overrides: dict[str, Any] | None = None, kafka_config: dict[str, str] | None = None) -> int:
    try:
        settings = RelaySettings.load(overrides, kafka_config)
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    logs.setup(settings.log_level)
    logs.register_secrets({"database_url": settings.database_url, "kafka": settings.kafka_extra})
    if settings.test_kill_at or settings.test_broken:
        log.warning("TEST-ONLY fault settings are active: never use them in production",
                    extra={"kill_at": settings.test_kill_at, "broken": settings.test_broken})
    return serve(settings)


def _malloc_trim() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise): run between batches by the stats loop, it keeps
    RSS from ratcheting up after bursts. Measured: see docs/decisions/013."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(name).malloc_trim(0)
        except (OSError, AttributeError):
            return


def _limit_malloc_arenas() -> None:
    """glibc gives each thread that allocates its own malloc arena; librdkafka runs ~5 threads per producer, so
    freed batch memory stays scattered over dozens of arenas and RSS only grows. Two arenas measured ~10% lower
    peak RSS at the same throughput. (Same as MALLOC_ARENA_MAX=2; must run before the threads start.)"""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(name).mallopt(-8, 2)  # M_ARENA_MAX
        except (OSError, AttributeError):
            log.debug("mallopt unavailable; keeping the default malloc arenas")


def serve(settings: RelaySettings) -> int:
    from relay import kafka  # the only confluent_kafka importer; deferred so `outbox status` never loads it
    from relay.http import HealthServer
    from relay.supervisor import Supervisor

    _limit_malloc_arenas()
    try:
        kafka.validate_config(settings)  # before anything else: a typo in a setting is exit 3, whatever is down
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    engine = sa.create_engine(settings.sqlalchemy_url, pool_size=settings.shards + 4,
                              connect_args={
                                  "connect_timeout": 10, "application_name": "outbox-relay",
                                  # A relay frozen (SIGSTOP, VM pause) inside a mark transaction would hold row
                                  # locks the shard's next owner needs for recovery: let the server end it.
                                  "options": "-c idle_in_transaction_session_timeout=5000"})
    try:
        startup.check_database(engine)
    except OutboxError as exc:
        return fail(EXIT_COULD_NOT_RUN, "database unreachable", exc)
    try:
        startup.check_schema(engine, settings.db_schema)
    except ConfigError as exc:  # the role may not read the version: `migrate upgrade` would not help
        return fail(EXIT_CONFIG, "configuration error", exc)
    except SchemaBehindError as exc:
        return fail(EXIT_COULD_NOT_RUN, "schema behind", exc)
    except OutboxError as exc:
        return fail(EXIT_COULD_NOT_RUN, "database unreachable", exc)
    store = RelayStore(engine, settings.db_schema)
    try:
        startup.check_privileges(store)
        startup.check_shards(store, settings.shards)
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    except OutboxError as exc:
        return fail(EXIT_COULD_NOT_RUN, "database unreachable", exc)
    try:
        with startup.deduplicated_client_logs() as client_logs:  # its summary line comes before our verdict
            kafka.probe(settings, timeout=min(15.0, settings.kafka_timeout_s))
            checkpoints = kafka.open_checkpoint_log(settings)
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    except OutboxError as exc:
        last = client_logs.last_error
        return fail(EXIT_COULD_NOT_RUN, "Kafka unreachable", exc,
                    detail=f"last librdkafka error: {last}" if last else None)
    sup = Supervisor(settings, store,
                     transport_factory=lambda shard: kafka.shard_transport(settings, shard), checkpoints=checkpoints,
                     housekeeping=_malloc_trim)
    http = None
    if settings.http_port >= 0:
        try:
            http = HealthServer(settings.http_host, settings.http_port, sup.metrics.registry,
                                sup.healthy, sup.ready).start()
        except OSError as exc:
            return fail(EXIT_COULD_NOT_RUN, f"cannot serve HTTP on {settings.http_host}:{settings.http_port}", exc)
    # Long-lived start-up objects never need collecting, and a batch allocates tens of thousands of short-lived
    # ones: freeze the former and collect the young generation less often (measured: fewer, shorter pauses).
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    stop = threading.Event()
    _install_signals(stop)
    log.info("relay started", extra={
        "instance": settings.instance_id, "shards": settings.shards, "http_port": http.port if http else None,
        "settings": logs.redact(settings.model_dump(mode="json", exclude={"kafka_extra"})),
        "kafka_extra": logs.redact(settings.kafka_extra)})
    try:
        sup.run(stop)
    finally:
        if http is not None:
            http.stop()
        engine.dispose()
    return EXIT_OK


def _install_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            # Second signal: leave now. Safe: an open Kafka transaction is aborted by the next owner.
            os._exit(EXIT_INTERRUPTED)
        log.info("stopping: finishing in-flight batches, then releasing leases",
                 extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
