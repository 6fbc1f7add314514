"""The relay's settings: one frozen object per process, validated at start. The only env reader of the relay.

Each field says its environment variable, unit, default and trade-off; ``outbox relay`` flags override the
environment. A bad value raises :class:`outbox.errors.ConfigError` naming the variable (exit code 3).

librdkafka settings pass through unchanged (for TLS/SASL and tuning): ``OUTBOX_KAFKA_<NAME>`` becomes
``<name>`` with ``_`` turned into ``.`` (``OUTBOX_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` → ``security.protocol``),
and ``--kafka-config key=value`` sets a key verbatim. They override the relay's producer defaults, except the
settings exactly-once depends on (``transactional.id``, ``enable.idempotence``, ``acks``), which are refused.
"""

from __future__ import annotations

import os
import socket
import uuid
from contextvars import ContextVar
from typing import Any, Self

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from migrations.status import VERSION_TABLE_PATTERN, VERSION_TABLE_VAR
from outbox.config import DEFAULT_SHARDS, MAX_SHARDS
from outbox.errors import ConfigError
from relay import dburl
from relay.config_values import (
    BootstrapServers,
    Compression,
    ReplicationFactor,
    SchemaName,
    TopicName,
)

KAFKA_ENV_PREFIX = "OUTBOX_KAFKA_"
# Exactly-once rests on these; letting a passthrough change them would silently void the guarantee.
PROTECTED_KAFKA_KEYS = frozenset({"transactional.id", "enable.idempotence", "acks", "isolation.level"})
# The fields that have a flag on `outbox relay` / `outbox status` (relay/cli/daemon.py): an error names a flag only
# when it exists (tests/unit/relay/test_config_flags.py checks both sides against the real commands).
RELAY_FLAGS = {"db_schema": "--schema"} | {f: "--" + f.replace("_", "-") for f in (
    "database_url", "bootstrap_servers", "shards", "instance_id", "batch_size", "lease_ttl_s", "heartbeat_s",
    "transactional_id_prefix", "checkpoint_topic", "compression", "linger_ms", "http_port", "drain_deadline_s",
    "max_attempts", "log_level")}
STATUS_FLAGS = {"database_url": "--database-url", "db_schema": "--schema", "shards": "--shards"}


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


_EXPLICIT: ContextVar[bool] = ContextVar("relay_settings_explicit", default=False)


class RelaySettings(BaseSettings):
    """All the relay's knobs. Construct with :meth:`load`, never directly from a module import."""

    model_config = SettingsConfigDict(
        env_prefix="OUTBOX_RELAY_", frozen=True, extra="ignore", populate_by_name=True, case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any, env_settings: Any,
                                   dotenv_settings: Any, file_secret_settings: Any) -> tuple[Any, ...]:
        # load(environ=...) means that mapping only: os.environ must not fill the gaps (it did, silently).
        if _EXPLICIT.get():
            return (init_settings,)
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    # --- where -------------------------------------------------------------------------------------------
    database_url: str = Field(validation_alias="OUTBOX_DATABASE_URL", min_length=1)
    """OUTBOX_DATABASE_URL: SQLAlchemy URL of the outbox database (``postgresql+psycopg://...``). Required."""
    bootstrap_servers: BootstrapServers = Field(validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    """KAFKA_BOOTSTRAP_SERVERS: comma-separated ``host:port`` list (``[v6addr]:port``, ``SSL://host:port``).
    Required."""
    db_schema: SchemaName = Field("outbox", validation_alias="OUTBOX_SCHEMA")
    """OUTBOX_SCHEMA: Postgres schema of the outbox tables, at most 63 characters. Default ``outbox``."""
    version_table: str | None = Field(None, validation_alias=VERSION_TABLE_VAR, pattern=VERSION_TABLE_PATTERN)
    """OUTBOX_VERSION_TABLE: ``[schema.]table``, the version table recording our revisions when a host
    application's own Alembic env runs them and it is not found by itself (migrations/status.py). Default unset:
    the outbox schema's own, else an ``alembic_version`` on the search path or in ``public`` that records ours."""

    # --- ownership ---------------------------------------------------------------------------------------
    shards: int = Field(DEFAULT_SHARDS, validation_alias="OUTBOX_SHARDS", ge=1, le=MAX_SHARDS)
    """OUTBOX_SHARDS: number of shards; MUST equal the writers' value (rows carry their shard). Default 8.
    It caps how many relay instances share the work (one transactional producer each); each shard runs its own
    Kafka transactions, so more shards also mean more, smaller transactions (docs/decisions/014)."""
    instance_id: str = Field(default_factory=_default_instance_id, min_length=1, max_length=200)
    """OUTBOX_RELAY_INSTANCE_ID: this instance's name in the lease tables. Default ``<host>-<pid>-<random>``."""
    lease_ttl_s: float = Field(2.5, gt=0.2, le=300)
    """OUTBOX_RELAY_LEASE_TTL_S (seconds, default 2.5): a lease not renewed for this long is taken over. Lower
    fails over faster; too low and a GC pause or a slow database makes healthy instances lose shards. A pause
    shorter than TTL - heartbeat (2 s by default) never costs a lease."""
    heartbeat_s: float = Field(0.5, gt=0.05, le=60)
    """OUTBOX_RELAY_HEARTBEAT_S (seconds, default 0.5): lease renewal and rebalance period. At most TTL/2.
    Renewing often lets the TTL sit closer to the pause it must tolerate: failover costs the TTL, a pause costs
    a lease only past TTL - heartbeat (docs/decisions/011)."""

    # --- Kafka -------------------------------------------------------------------------------------------
    transactional_id_prefix: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,200}$")
    """OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX: ``transactional.id = <prefix>-<shard>`` (and ``<prefix>-<shard>.1``
    for a shard's second producer). Default ``outbox-relay-<outbox id>``, derived from the outbox's identity (its
    Postgres system identifier, database and schema: relay/identity.py), so two outboxes sharing a Kafka cluster
    never share an id. When set, it must be the same on every instance of one outbox (it is the Kafka-side
    fencing token) and different for every other outbox: a relay that finds another outbox's checkpoint under
    its ids refuses to act on it (exit 3)."""
    outbox_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """OUTBOX_RELAY_OUTBOX_ID: pins the outbox's identity, which is otherwise derived from the database (read at
    start). Only for an outbox moved to another Postgres cluster by dump and restore (a new system identifier):
    set it to the identity the relay logged before the move, so its Kafka state stays its own. Default unset."""
    producers_per_shard: int = Field(2, ge=1, le=2)
    """OUTBOX_RELAY_PRODUCERS_PER_SHARD (1 or 2, default 2): a shard's transactions alternate between this many
    producers, so the next one rarely waits for the broker to finish the last one's commit markers (Kafka answers
    CONCURRENT_TRANSACTIONS and librdkafka retries 20 ms later). Takeovers fence both ids whatever the value
    (docs/decisions/017)."""
    checkpoint_topic: TopicName = Field("outbox-relay-checkpoints", pattern=r"^[A-Za-z0-9._-]{1,249}$")
    """OUTBOX_RELAY_CHECKPOINT_TOPIC: compacted topic holding each shard's last committed batch, created at
    start if missing (one partition per shard). Default ``outbox-relay-checkpoints``."""
    checkpoint_replication: ReplicationFactor = Field(-1, ge=-1, le=32)
    """OUTBOX_RELAY_CHECKPOINT_REPLICATION: replication factor when creating the checkpoint topic; -1 (default)
    uses the broker's ``default.replication.factor``. 0 is refused."""
    compression: Compression = Compression.LZ4
    """OUTBOX_RELAY_COMPRESSION: lz4 (default: cheap CPU, good ratio), zstd (smaller, more CPU), none, ..."""
    linger_ms: int = Field(20, ge=0, le=1000)
    """OUTBOX_RELAY_LINGER_MS (ms, default 20): producer batching delay. The relay flushes at the end of each
    batch, so linger only shapes the record batches inside one transaction and never adds idle latency."""
    transaction_timeout_ms: int = Field(60000, ge=1000, le=900000)
    """OUTBOX_RELAY_TRANSACTION_TIMEOUT_MS (ms, default 60000): broker aborts a transaction open this long.
    Keep well above the batch time; a zombie's open transaction is aborted at once by the next owner anyway."""
    kafka_timeout_s: float = Field(30.0, gt=0, le=600)
    """OUTBOX_RELAY_KAFKA_TIMEOUT_S (seconds, default 30): bound on init/flush/commit/abort calls."""
    kafka_extra: dict[str, str] = Field(default_factory=dict)
    """``OUTBOX_KAFKA_*`` and ``--kafka-config``: extra librdkafka settings (see the module docstring)."""

    # --- the loop ----------------------------------------------------------------------------------------
    batch_size: int = Field(1000, ge=1, le=20000)
    """OUTBOX_RELAY_BATCH_SIZE (rows, default 1000): rows per Kafka transaction. Larger amortises the commit
    and the mark; smaller bounds memory (peak RSS grows ~25 MB per 1000 rows of 1 KiB with 8 shards), the work
    redone after a crash and the checkpoint record's size. See bench/relay.py for measurements."""
    concurrency: int = Field(2, ge=1, le=1024)
    """OUTBOX_RELAY_CONCURRENCY (default 2): shards of this process that may claim and produce at the same time.
    Waits (flush, commit, mark) happen outside this limit, so all owned shards still overlap their I/O. Bounds
    memory (batches in flight) and GIL contention; raise it with more cores, or run more relay processes."""
    poll_min_s: float = Field(0.002, ge=0, le=10)
    """OUTBOX_RELAY_POLL_MIN_S (seconds, default 0.002): first idle sleep after an empty claim."""
    poll_max_s: float = Field(0.25, gt=0, le=60)
    """OUTBOX_RELAY_POLL_MAX_S (seconds, default 0.25): idle sleep ceiling. Full batches never sleep; an idle
    relay doubles its sleep from poll_min up to this. Lower = lower latency after idleness, more empty polls."""
    wake_interval_s: float = Field(0.01, ge=0, le=10)
    """OUTBOX_RELAY_WAKE_INTERVAL_S (seconds, default 0.01; 0 turns it off): how often one probe per instance
    looks for newly committed rows (a few primary-key index entries) and wakes the idle workers of their shards,
    so a quiet relay publishes within about this much instead of its idle backoff (relay/wake.py)."""
    retry_initial_s: float = Field(0.1, gt=0, le=60)
    """OUTBOX_RELAY_RETRY_INITIAL_S (seconds, default 0.1): first backoff after a transient error (jittered,
    doubling up to retry_max_s). Transient errors are retried forever: a row is never dropped."""
    retry_max_s: float = Field(5.0, gt=0, le=600)
    """OUTBOX_RELAY_RETRY_MAX_S (seconds, default 5): backoff ceiling for transient errors."""
    max_attempts: int = Field(3, ge=1, le=1000)
    """OUTBOX_RELAY_MAX_ATTEMPTS (default 3): permanent failures of one row before it is dead-lettered (its
    key is then held to keep order; other keys flow)."""
    startup_wait_s: float = Field(0.0, ge=0, le=86400)
    """OUTBOX_RELAY_STARTUP_WAIT_S (seconds, default 0: no bound): how long start-up waits for the database, its
    schema migration and Kafka before giving up with exit code 2. By default it waits for as long as it takes,
    retrying with the transient backoff above (healthz 200, readyz 503 meanwhile), so an outage never becomes a
    crash loop; set a bound only where something outside must notice a relay that cannot start."""
    drain_deadline_s: float = Field(10.0, gt=0, le=600)
    """OUTBOX_RELAY_DRAIN_DEADLINE_S (seconds, default 10): on SIGTERM/SIGINT, time to finish the in-flight
    batch and release leases before exiting anyway (an unfinished transaction is aborted by the next owner)."""

    # --- observability -----------------------------------------------------------------------------------
    http_host: str = "0.0.0.0"  # metrics are scraped from outside the host
    """OUTBOX_RELAY_HTTP_HOST: bind address of /metrics, /healthz, /readyz. Default 0.0.0.0."""
    http_port: int = Field(9108, ge=-1, le=65535)
    """OUTBOX_RELAY_HTTP_PORT (default 9108): port of /metrics, /healthz, /readyz; 0 = any free port (logged),
    -1 = no HTTP server."""
    claim_floor: bool = True
    """OUTBOX_RELAY_CLAIM_FLOOR (default true): claims skip the ids each shard already finished, proven safe with
    the database's transaction horizon (docs/decisions/015-claim-floor.md). Off: every claim starts from the
    shard's lowest pending id (slower with a large backlog while vacuum has not caught up)."""
    stats_interval_s: float = Field(5.0, gt=0, le=3600)
    """OUTBOX_RELAY_STATS_INTERVAL_S (seconds, default 5): refresh of backlog/DLQ/held-key gauges (one
    aggregate query over the pending index)."""
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """OUTBOX_RELAY_LOG_LEVEL: DEBUG, INFO (default: logs only when rows moved or something failed), ..."""

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.heartbeat_s * 2 > self.lease_ttl_s:
            raise ValueError(f"OUTBOX_RELAY_HEARTBEAT_S ({self.heartbeat_s}) must be at most half of "
                             f"OUTBOX_RELAY_LEASE_TTL_S ({self.lease_ttl_s}), or a single late renewal loses a lease")
        if self.poll_min_s > self.poll_max_s:
            raise ValueError("OUTBOX_RELAY_POLL_MIN_S must not exceed OUTBOX_RELAY_POLL_MAX_S")
        if self.retry_initial_s > self.retry_max_s:
            raise ValueError("OUTBOX_RELAY_RETRY_INITIAL_S must not exceed OUTBOX_RELAY_RETRY_MAX_S")
        if self.transaction_timeout_ms < self.kafka_timeout_s * 1000:
            raise ValueError("OUTBOX_RELAY_TRANSACTION_TIMEOUT_MS must be at least OUTBOX_RELAY_KAFKA_TIMEOUT_S")
        bad = PROTECTED_KAFKA_KEYS & set(self.kafka_extra)
        if bad:
            raise ValueError(f"OUTBOX_KAFKA_* / --kafka-config may not set {sorted(bad)}: exactly-once needs them")
        dburl.parse(self.database_url)
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with the psycopg 3 driver, whatever spelling the user gave."""
        return dburl.database_url(self.database_url)

    def transactional_id(self, shard: int, lane: int = 0) -> str:
        return f"{self.id_prefix}-{shard}" + (f".{lane}" if lane else "")

    @property
    def id_prefix(self) -> str:
        """The transactional-id prefix in force: the setting, else derived from the outbox identity (only known
        once the database answered: ``relay.identity.resolve`` fills it in)."""
        if self.transactional_id_prefix:
            return self.transactional_id_prefix
        if self.outbox_id is None:
            raise RuntimeError("the outbox identity is not resolved yet: call relay.identity.resolve(settings, "
                               "store) before using Kafka")
        return f"outbox-relay-{self.outbox_id}"

    def env_name(self, field: str) -> str:
        """The environment variable behind ``field`` (for error messages)."""
        info = type(self).model_fields.get(field)
        return _env_name(field, info.validation_alias if info else None)

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None, kafka_config: dict[str, str] | None = None,
             environ: dict[str, str] | None = None) -> RelaySettings:
        """Read the environment (or ``environ``), apply flag ``overrides`` (field names), validate.

        Raises ConfigError naming the variable of the first bad value.
        """
        env = dict(os.environ if environ is None else environ)
        extra = {k[len(KAFKA_ENV_PREFIX):].lower().replace("_", "."): v
                 for k, v in env.items() if k.startswith(KAFKA_ENV_PREFIX) and len(k) > len(KAFKA_ENV_PREFIX)}
        extra.update(kafka_config or {})
        kw: dict[str, Any] = {k: v for k, v in (overrides or {}).items() if v is not None}
        kw["kafka_extra"] = extra
        try:
            if environ is None:
                return cls(**kw)
            return _from_mapping(cls, env, kw)
        except ValidationError as exc:
            raise ConfigError(_describe(cls, exc, RELAY_FLAGS)) from exc


def _from_mapping(cls: type[RelaySettings], env: dict[str, str], kw: dict[str, Any]) -> RelaySettings:
    """Validate against an explicit mapping instead of os.environ (unit tests, embedding)."""
    values: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        var = _env_name(name, info.validation_alias)
        if var in env:
            values[name] = env[var]
    values.update(kw)
    token = _EXPLICIT.set(True)
    try:
        return cls.model_validate(values, context=None)
    finally:
        _EXPLICIT.reset(token)


def _env_name(field: str, alias: object) -> str:
    return alias if isinstance(alias, str) else f"OUTBOX_RELAY_{field.upper()}"


def _describe(cls: type[BaseSettings], exc: ValidationError, flags: dict[str, str]) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else ""
        info = cls.model_fields.get(field)
        if info is None:
            by_alias = {(_env_name(n, i.validation_alias)): n for n, i in cls.model_fields.items()}
            var = field if field in by_alias else ""
        else:
            var = _env_name(field, info.validation_alias)
            var = f"{var} ({flags[field]})" if field in flags else var
        got = err.get("input")
        shown = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "missing":
            msg = "is required but not set"
        parts.append(f"{var}: {msg}{shown}" if var else msg)
    return "bad relay configuration: " + "; ".join(parts)


class StatusSettings(BaseSettings):
    """What ``outbox status`` needs: only the database."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    database_url: str = Field(validation_alias="OUTBOX_DATABASE_URL", min_length=1)
    db_schema: SchemaName = Field("outbox", validation_alias="OUTBOX_SCHEMA")
    shards: int = Field(DEFAULT_SHARDS, validation_alias="OUTBOX_SHARDS", ge=1, le=MAX_SHARDS)
    """OUTBOX_SHARDS as the relays use it: pending rows in shards at or beyond it are shown as stranded."""

    @model_validator(mode="after")
    def _url(self) -> Self:
        dburl.parse(self.database_url)
        return self

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> StatusSettings:
        try:
            return cls(**{k: v for k, v in (overrides or {}).items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(_describe(cls, exc, STATUS_FLAGS).replace("relay configuration", "status configuration")
                              ) from exc

    @property
    def sqlalchemy_url(self) -> str:
        return dburl.database_url(self.database_url)

