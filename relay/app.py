"""``outbox relay``: validate, wait for the world, then run the supervisor until SIGTERM/SIGINT.

A database or Kafka that is down at start, or a schema not migrated yet, is waited for (healthz 200, readyz
503, one log line per attempt), never a reason to exit: under a supervisor an exit would become a crash loop.

Exit codes: 0 stopped cleanly (also after the drain deadline, and on SIGTERM while waiting to start), 2 could
not start (the HTTP port is taken, an unexpected database or Kafka error, or OUTBOX_RELAY_STARTUP_WAIT_S ran out
while waiting; typer's usage errors too), 3 bad configuration (also: librdkafka refuses a setting, the database
refuses the login, Kafka refuses the credentials, OUTBOX_SHARDS below the shard of a pending row, a database role
or Kafka principal without the rights it needs, another outbox's checkpoint under this relay's transactional
ids, a pooler in transaction mode between the relay and Postgres), 130 second signal (immediate exit).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from outbox.errors import ConfigError, PublishError, SchemaBehindError, StoreError
from outbox.store.relay import RelayStore
from outbox.store.relay_session import keep_session_settings
from relay import identity, logs, pooler, startup
from relay.causes import cause_lines
from relay.config import RelaySettings

if TYPE_CHECKING:  # deferred at run time (see serve)
    from relay.hooks import Hooks
    from relay.http import HealthServer
    from relay.kafka import KafkaCheckpointLog
    from relay.metrics import Metrics

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


def main(overrides: dict[str, Any] | None = None, kafka_config: dict[str, str] | None = None, *,
         hooks: Hooks | None = None) -> int:
    """``hooks``: called by the workers at each step of a batch (relay/hooks.py); the relay passes none, the
    fault suite's ``python -m chaos.faulty_relay`` passes its own."""
    try:
        settings = RelaySettings.load(overrides, kafka_config)
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    logs.setup(settings.log_level)
    logs.register_secrets({"database_url": settings.database_url, "kafka": settings.kafka_extra})
    return serve(settings, hooks=hooks)


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


def serve(settings: RelaySettings, *, hooks: Hooks | None = None) -> int:
    """Start, wait for the dependencies, run until stopped. The order matters:

    1. settings librdkafka refuses: exit 3 before anything else, whatever is down;
    2. the HTTP server and the signal handlers, so that probes answer (healthz 200, readyz 503) and SIGTERM
       exits 0 while start-up waits;
    3. the database, its schema, the role's grants, the shard count, then the outbox identity, which gives the
       default transactional-id prefix: waited for while down or behind (relay/startup.py);
    4. Kafka with the resolved settings: waited for while no broker answers;
    5. the supervisor, until SIGTERM/SIGINT or a fatal worker exit (an outbox collision: exit 3).
    """
    from relay import kafka  # the only confluent_kafka importer; deferred so `outbox status` never loads it
    from relay.http import HealthServer, Pulse, liveness_window_s
    from relay.metrics import Metrics

    _limit_malloc_arenas()
    try:
        kafka.validate_config(settings)  # before anything else: a typo in a setting is exit 3, whatever is down
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    stop = threading.Event()
    waiting = startup.StartupWait(settings, stop, Pulse(liveness_window_s(settings.heartbeat_s,
                                                                          settings.kafka_timeout_s)))
    metrics = Metrics()
    http = None
    if settings.http_port >= 0:
        try:
            http = HealthServer(settings.http_host, settings.http_port, metrics.registry,
                                waiting.healthy, waiting.ready).start()
        except OSError as exc:
            return fail(EXIT_COULD_NOT_RUN, f"cannot serve HTTP on {settings.http_host}:{settings.http_port}", exc)
    _install_signals(stop)
    engine = sa.create_engine(settings.sqlalchemy_url, pool_size=settings.shards + 4,
                              connect_args={"connect_timeout": 10, "application_name": "outbox-relay"})
    # A relay frozen (SIGSTOP, VM pause) inside a mark transaction would hold row locks the shard's next owner
    # needs for recovery: each connection lets the server end it (a SET, which PgBouncer lets through).
    keep_session_settings(engine)
    store = RelayStore(engine, settings.db_schema)
    try:
        return _run(settings, store, waiting, stop, metrics=metrics, http=http, hooks=hooks)
    finally:
        if http is not None:
            http.stop()
        engine.dispose()


def _database_ready(settings: RelaySettings, store: RelayStore) -> RelaySettings:
    """One start-up attempt at the database; returns the settings with the outbox identity resolved."""
    pooler.require_own_sessions(store.engine)  # first: before any connection of the relay's own is set up
    startup.check_database(store.engine)
    startup.check_schema(store.engine, settings.db_schema, settings.version_table)
    startup.check_privileges(store)
    startup.check_shards(store, settings.shards)
    return identity.resolve(settings, store)


def _run(settings: RelaySettings, store: RelayStore, waiting: startup.StartupWait, stop: threading.Event, *,
         metrics: Metrics, http: HealthServer | None, hooks: Hooks | None) -> int:
    from relay import kafka
    from relay.supervisor import Supervisor

    def kafka_ready(resolved: RelaySettings) -> KafkaCheckpointLog:
        kafka.probe(resolved, timeout=min(15.0, resolved.kafka_timeout_s))
        return kafka.open_checkpoint_log(resolved)

    try:
        resolved = waiting.until(lambda: _database_ready(settings, store))
        if resolved is None:
            return _stopped_waiting()
        settings = resolved  # from here on, everything (Kafka first) uses the outbox identity's names
        checkpoints = waiting.until(lambda: kafka_ready(resolved))
        if checkpoints is None:
            return _stopped_waiting()
    except ConfigError as exc:
        return fail(EXIT_CONFIG, "configuration error", exc)
    except SchemaBehindError as exc:
        return fail(EXIT_COULD_NOT_RUN, _could_not_start(settings, "schema behind", exc), exc)
    except StoreError as exc:
        return fail(EXIT_COULD_NOT_RUN, _could_not_start(settings, "database unreachable", exc), exc)
    except PublishError as exc:
        return fail(EXIT_COULD_NOT_RUN, _could_not_start(settings, "Kafka unreachable", exc), exc)
    sup = Supervisor(settings, store, metrics=metrics,
                     transport_factory=lambda shard: kafka.shard_transport(settings, shard), checkpoints=checkpoints,
                     housekeeping=_malloc_trim, kafka_check=kafka.Reachability(settings), hooks=hooks)
    if http is not None:
        http.answer_from(sup.healthy, sup.ready)
    # Long-lived start-up objects never need collecting, and a batch allocates tens of thousands of short-lived
    # ones: freeze the former and collect the young generation less often (measured: fewer, shorter pauses).
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    log.info("relay started", extra={
        "instance": settings.instance_id, "shards": settings.shards, "http_port": http.port if http else None,
        "outbox_id": settings.outbox_id, "transactional_id_prefix": settings.id_prefix,
        "settings": logs.redact(settings.model_dump(mode="json", exclude={"kafka_extra"})),
        "kafka_extra": logs.redact(settings.kafka_extra)})
    sup.run(stop)
    if sup.fatal is not None:
        return fail(EXIT_CONFIG, "configuration error", sup.fatal)
    return EXIT_OK


def _stopped_waiting() -> int:
    log.info("stopped while waiting to start")
    return EXIT_OK


def _could_not_start(settings: RelaySettings, what: str, exc: Exception) -> str:
    if isinstance(exc, tuple(startup.WAITS_FOR)):  # waited for: only a bounded wait ends this way
        return f"{what} (gave up waiting after OUTBOX_RELAY_STARTUP_WAIT_S={settings.startup_wait_s:g}s)"
    return what


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
