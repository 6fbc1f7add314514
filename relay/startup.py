"""Start-up: the checks, each failing with a message that says what is wrong and what to do, the messages of the
Kafka-side checks that relay.kafka runs (a setting librdkafka refuses, a checkpoint topic the broker refuses),
and :class:`StartupWait`, which retries the checks while a dependency is down.

What waits and what exits: a dependency that is down, or a schema that is behind (an operator's migration fixes
it), is waited for, with backoff and one log line per attempt, so that an outage never becomes a crash loop of
restarted relays. A configuration error (a value, a grant, a shard count that strands rows, a setting librdkafka
or the broker refuses) exits at once with code 3: waiting would not fix it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from migrations.status import SchemaState, SchemaStatus, VersionTable, schema_status
from outbox.errors import (
    ConfigError,
    DatabaseUnavailableError,
    KafkaUnavailableError,
    OutboxError,
    PermissionDeniedError,
    SchemaBehindError,
)
from outbox.store import translate_errors
from outbox.store.relay import RelayStore
from outbox.store.roles import Role, role_name
from relay.config import KAFKA_ENV_PREFIX, RelaySettings
from relay.http import Pulse
from relay.logs import MASK, client_log_limiter, redact, redact_text

log = logging.getLogger("relay.startup")
T = TypeVar("T")

# What start-up waits for, by the error that says it is not there yet. Anything else an attempt raises ends the
# wait at once (a ConfigError: exit 3).
WAITS_FOR: dict[type[OutboxError], str] = {
    SchemaBehindError: "the outbox schema to be migrated",  # the error says how, for the layout in use
    DatabaseUnavailableError: "the database",
    KafkaUnavailableError: "Kafka",
}


class StartupWait:
    """Runs start-up attempts until they succeed: while a dependency is down, each attempt that fails with one of
    :data:`WAITS_FOR` is retried after a backoff doubling from OUTBOX_RELAY_RETRY_INITIAL_S up to
    OUTBOX_RELAY_RETRY_MAX_S, with one WARNING line per attempt saying what it waits for and why.

    Meanwhile the HTTP probes answer from here: healthy while this loop turns (an attempt stuck for good fails
    it), never ready. A stop (SIGTERM) ends the wait at once, even in the middle of an attempt, which runs in a
    thread of its own for that reason. With OUTBOX_RELAY_STARTUP_WAIT_S set, the wait gives up after that long by
    raising the last error (exit 2); by default it waits for as long as it takes.
    """

    def __init__(self, settings: RelaySettings, stop: threading.Event, pulse: Pulse,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.s, self._stop, self.pulse, self._clock = settings, stop, pulse, clock
        self.began = clock()

    def healthy(self) -> bool:
        return self.pulse.alive()

    @staticmethod
    def ready() -> bool:
        return False  # not publishing yet

    def until(self, attempt: Callable[[], T]) -> T | None:
        """``attempt()``'s result, once it succeeds; None if stopped first."""
        delay, n = 0.0, 0
        while True:
            self.pulse.beat()
            try:
                got = self._attempt(attempt)
            except tuple(WAITS_FOR) as exc:
                n += 1
                delay = min(self.s.retry_max_s, max(self.s.retry_initial_s, delay * 2))
                waited = self._clock() - self.began
                limit = self.s.startup_wait_s
                if limit and waited + delay > limit:
                    raise
                what = next(w for t, w in WAITS_FOR.items() if isinstance(exc, t))
                extra: dict[str, object] = {"waiting_for": what, "error": str(exc)[:500], "attempt": n,
                                            "waited_s": round(waited, 1), "next_in_s": round(delay, 2)}
                limiter = client_log_limiter()
                if isinstance(exc, KafkaUnavailableError) and limiter is not None and limiter.last_error:
                    extra["last_librdkafka_error"] = limiter.last_error[:500]
                log.warning(f"waiting for {what}", extra=extra)
                if self._stop.wait(delay):
                    return None
                continue
            if got is None:
                return None
            if n:
                log.info("start-up wait over", extra={"attempts": n + 1,
                                                       "waited_s": round(self._clock() - self.began, 1)})
            return got[0]

    def _attempt(self, attempt: Callable[[], T]) -> tuple[T] | None:
        """``(attempt(),)``, or None if stopped meanwhile (the attempt's thread is left to finish on its own)."""
        out: list[tuple[T] | BaseException] = []

        def body() -> None:
            try:
                out.append((attempt(),))
            except BaseException as exc:  # handed to the waiting thread, which raises it
                out.append(exc)

        t = threading.Thread(target=body, name="relay-startup-attempt", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
            if self._stop.is_set():
                return None
        got = out[0]
        if isinstance(got, BaseException):
            raise got
        return got


# The server's words when it refuses the login itself: a configuration error (OUTBOX_DATABASE_URL), not an outage.
# libpq gives no SQLSTATE for a failed connection, so the (English) message is all there is; a server speaking
# another language is waited for instead, which is the safe side.
_LOGIN_REFUSED = re.compile(r"password authentication failed|role \S+ does not exist|no pg_hba\.conf entry")


def check_database(engine: sa.Engine) -> None:
    """DatabaseUnavailableError while the database does not answer (start-up waits); ConfigError when it answers
    but refuses the relay's login (exit 3: waiting would not fix the URL or the password)."""
    try:
        with engine.connect() as c:
            c.execute(sa.select(1))
    except sa_exc.DBAPIError as exc:
        said = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        where = engine.url.render_as_string(hide_password=True)
        if _LOGIN_REFUSED.search(said):
            raise ConfigError(f"OUTBOX_DATABASE_URL: the database at {where} refused the relay's login: {said}") \
                from exc
        raise DatabaseUnavailableError(f"the database at {where} is unreachable: {said}") from exc


def check_schema(engine: sa.Engine, schema: str, version_table: str | None = None) -> SchemaStatus:
    """Refuse to run on a schema behind this code (SchemaBehindError), wherever our revisions are recorded: the
    outbox schema's own version table, or a host application's (``version_table``: OUTBOX_VERSION_TABLE; the
    rule and its owner: migrations/status.py). A schema ahead of this code is logged and accepted. A role that may
    not read the version is a ConfigError: no migration fixes that."""
    named = VersionTable.parse(version_table) if version_table else None
    try:
        with translate_errors("reading the schema version"), engine.connect() as c:
            st = schema_status(c, schema, named)
    except PermissionDeniedError as exc:
        raise ConfigError(
            f"the relay's database role may not read the schema version ({exc.denied}): apply "
            f"`outbox roles sql` as the schema owner and grant the relay role ({role_name(Role.RELAY)} by "
            f"default) to this login (again after each `outbox migrate upgrade`; docs/security.md, "
            f"\"Least privilege\")"
        ) from exc
    if st.state is SchemaState.AHEAD:
        log.warning("the database schema is newer than this relay", extra={"db": list(st.current)})
    elif st.state is SchemaState.BEHIND:
        raise SchemaBehindError(
            f"the outbox schema {schema!r} is behind this relay (applied {list(st.current) or 'nothing'}, "
            f"needs {list(st.heads)}; {st.where}): {st.upgrade_hint}"
        )
    return st


def check_privileges(store: RelayStore) -> None:
    """Refuse to start when the relay's role may not run the claim. A role granted before an upgrade lacks the
    tables the upgrade added (``outbox roles sql`` is re-applied by hand), and without this check every worker
    would retry a permission error forever instead of saying what to do."""
    try:
        store.probe_claim()
    except PermissionDeniedError as exc:
        raise ConfigError(
            f"the relay's database role may not read what it claims from ({exc.denied}): apply `outbox roles sql` "
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


def kafka_config_error(extra: dict[str, str], reason: str, refused_alone: Callable[[str, str], bool]) -> ConfigError:
    """librdkafka refused the settings for ``reason``: name the passthrough setting to fix, secrets masked."""
    for s in sorted((v for k, v in extra.items() if v and redact(v, k) != v), key=len, reverse=True):
        reason = re.sub(rf"(?<!\w){re.escape(s)}(?!\w)" if len(s) < 4 else re.escape(s), MASK, reason)
    reason = redact_text(reason.strip())
    key = _culprit(extra, reason, refused_alone)
    if key is None:
        where = "--kafka-config/OUTBOX_KAFKA_*" if extra else "the relay's own librdkafka settings"
    else:
        env = KAFKA_ENV_PREFIX + key.upper().replace(".", "_")
        value = extra[key]
        shown = f"{key}={value}" if redact(value, key) == value else f"{key} (value hidden)"
        where = f"--kafka-config/{env} {shown}"
    return ConfigError(f"{where}: {reason} (librdkafka's CONFIGURATION.md lists its settings and their values)")


def _culprit(extra: dict[str, str], reason: str, refused_alone: Callable[[str, str], bool]) -> str | None:
    """The key librdkafka refused: the one refused even alone (its messages may use another name: ``linger.ms``
    is reported as "queue.buffering.max.ms"); for a refused combination ("Failed to create producer: Unsupported
    SASL mechanism: BOGUS"), the key or else the value the reason names."""
    for k, v in extra.items():
        if refused_alone(k, v):
            return k
    for k in extra:
        if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w.])", reason):
            return k
    for k, v in extra.items():
        if len(v) > 1 and redact(v, k) == v and re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", reason):
            return k
    return None


def checkpoint_topic_refused(settings: RelaySettings, kind: str, said: str) -> ConfigError:
    """The broker refused to create the checkpoint topic for ``kind`` of reason (``said``: its words)."""
    topic, rf, shards = settings.checkpoint_topic, settings.checkpoint_replication, settings.shards
    if kind == "replication":
        return ConfigError(f"OUTBOX_RELAY_CHECKPOINT_REPLICATION={rf}: the broker refused to create the checkpoint "
                           f"topic {topic!r} with it ({said}): set at most the number of brokers, or -1 for the "
                           "broker's default.replication.factor")
    named = f"OUTBOX_RELAY_CHECKPOINT_TOPIC (--checkpoint-topic)={topic!r}"
    if kind == "name":
        return ConfigError(f"{named}: the broker refused this topic name ({said}): choose another")
    if kind == "denied":
        return ConfigError(f"{named}: the relay's Kafka principal may not create it ({said}): grant it CREATE on "
                           f"that topic, or create the topic yourself (cleanup.policy=compact, {shards} partitions)")
    return ConfigError(f"{named}, OUTBOX_RELAY_CHECKPOINT_REPLICATION={rf}: the broker refused to create the "
                       f"checkpoint topic ({said}; {shards} partitions, cleanup.policy=compact): change them to fit "
                       "its topic policy, or create the topic yourself")
