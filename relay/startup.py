"""Start-up checks, each failing with a message that says what is wrong and what to do (exit code 2, or 3 for
a shard count that strands pending rows or a role without its grants), and the messages of the Kafka-side
checks that relay.kafka runs (a setting librdkafka refuses, a checkpoint topic the broker refuses: exit 3)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrations import VERSION_TABLE, alembic_config
from outbox.errors import ConfigError, DatabaseUnavailableError, PermissionDeniedError, SchemaBehindError
from outbox.store import translate_errors
from outbox.store.relay import RelayStore
from outbox.store.roles import Role, role_name
from relay.config import KAFKA_ENV_PREFIX, RelaySettings
from relay.logs import MASK, redact, redact_text

log = logging.getLogger("relay.startup")


def check_database(engine: sa.Engine) -> None:
    try:
        with engine.connect() as c:
            c.execute(sa.select(1))
    except sa_exc.DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"the database at {engine.url.render_as_string(hide_password=True)} is unreachable: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc


def check_schema(engine: sa.Engine, schema: str) -> None:
    """Refuse to run on a schema behind this code: every migration head must be applied (SchemaBehindError).
    A role that may not read the version is a ConfigError: no migration fixes that."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(False)))
    heads = set(script.get_heads())
    try:
        with translate_errors("reading the schema version"), engine.connect() as c:
            ctx = MigrationContext.configure(c, opts={"version_table": VERSION_TABLE,
                                                      "version_table_schema": schema})
            current = set(ctx.get_current_heads())
    except PermissionDeniedError as exc:
        raise ConfigError(
            f"the relay's database role may not read the schema version ({exc.denied}): apply "
            f"`outbox roles sql` as the schema owner and grant the relay role ({role_name(Role.RELAY)} by "
            f"default) to this login (again after each `outbox migrate upgrade`; docs/security.md, "
            f"\"Least privilege\")"
        ) from exc
    if heads <= current:
        return
    unknown = {r for r in current if not _known(script, r)}
    if unknown:
        log.warning("the database schema is newer than this relay", extra={"db": sorted(current)})
        return
    raise SchemaBehindError(
        f"the outbox schema {schema!r} is behind this relay (applied {sorted(current) or 'nothing'}, "
        f"needs {sorted(heads)}); run `outbox migrate upgrade` first"
    )


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


class ClientLogDedup(logging.Filter):
    """Lets the first of each distinct librdkafka line through and counts the repeats.

    Against an unreachable broker librdkafka logs a failed connect every few milliseconds, and all of them arrive
    at once when the probe gives up: ~290 identical lines that buried the one message saying what is wrong.
    Lines differing only in numbers (client ids, "after 0ms") count as the same line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {}
        self.last_error: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.last_error = text
        key = re.sub(r"\d+", "#", text)
        self.seen[key] = self.seen.get(key, 0) + 1
        return self.seen[key] == 1

    @property
    def repeats(self) -> int:
        return sum(n - 1 for n in self.seen.values())


@contextmanager
def deduplicated_client_logs(logger: str = "relay.kafka.client") -> Iterator[ClientLogDedup]:
    """Deduplicate librdkafka's log lines while the Kafka start-up checks run (see :class:`ClientLogDedup`); once
    running, every line counts, so the filter goes."""
    target = logging.getLogger(logger)
    dedup = ClientLogDedup()
    target.addFilter(dedup)
    try:
        yield dedup
    finally:
        target.removeFilter(dedup)
        if dedup.repeats:
            log.warning("librdkafka repeated log lines during the start-up checks; each was shown once",
                        extra={"repeats": dedup.repeats})


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


def _known(script: ScriptDirectory, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except Exception:  # alembic raises ResolutionError (and friends) for revisions it has never seen
        return False
