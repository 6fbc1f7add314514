"""The one exception tree of kafka-outbox.

Every error the library or the relay raises on purpose derives from :class:`OutboxError`. Driver errors
(psycopg, SQLAlchemy, librdkafka) are translated at their seam with ``raise ... from exc``, so the cause chain
is kept and callers only ever need to catch this tree. A class's docstring is its default message: it says
when it is raised and what to do about it.

::

    OutboxError
    ├── EventValidationError          bad input to enqueue(): raised before commit, nothing is written
    │   ├── PayloadError              data not JSON-able, NaN/Infinity, NUL, too large, content-type mismatch
    │   ├── SchemaValidationError     data fails the JSON Schema registered for its event type
    │   ├── TopicError                topic name Kafka would reject, or one of Kafka's internal (__*) topics
    │   ├── KeyError_                 key of the wrong type or too large
    │   ├── HeaderError               header names/values that are not str/bytes, reserved names
    │   └── AttributeValueError       CloudEvents attributes: type, source, subject, id, time
    ├── SessionStateError             enqueue on a closed, committed or inactive session/connection
    ├── ConfigError                   a bad configuration value (names the variable)
    │   ├── TimeParseError            a time or duration a user typed is malformed or out of range
    │   ├── OutboxCollisionError      two outboxes share Kafka-side state (transactional ids, checkpoints)
    │   └── PoolingModeError          a pooler (PgBouncer) in transaction mode keeps no session for this client
    ├── StoreError                    the database failed; the cause is chained
    │   ├── DatabaseUnavailableError  could not connect / connection lost (transient)
    │   ├── SchemaBehindError         the database schema is older than this code (run `outbox migrate upgrade`)
    │   ├── PermissionDeniedError     the database role lacks a grant (apply `outbox roles sql`; no migration helps)
    │   └── UnstorableRecordError     an inbox record exceeds a Postgres limit (dead-lettered, never retried)
    ├── PublishError                  Kafka failed; the cause is chained
    │   ├── KafkaUnavailableError     broker unreachable / timed out (transient)
    │   ├── FencedError               a newer owner of the shard fenced this producer (zombie)
    │   └── PermanentPublishError     the broker will never accept this record (too large, bad topic, auth)
    ├── LeaseLostError                this relay no longer owns the shard it is working on
    ├── ConsumerError                 the inbox consumer failed; the cause is chained
    ├── ReconcileError                the reconciler could not run (exit code 2)
    └── ReportSignatureError          a signed report does not verify
"""

from __future__ import annotations


class OutboxError(Exception):
    """Base of every error raised by kafka-outbox."""

    def __init__(self, message: str | None = None) -> None:
        doc = (type(self).__doc__ or type(self).__name__).strip().splitlines()[0]
        super().__init__(message or doc)


class EventValidationError(OutboxError, ValueError):
    """An event failed validation at write time; nothing was written. Fix the named field and retry."""


class PayloadError(EventValidationError):
    """The event data cannot be stored or published as given."""


class SchemaValidationError(EventValidationError):
    """The event data does not match the JSON Schema registered for its type."""


class TopicError(EventValidationError):
    """The topic name is not one Kafka accepts: use [a-zA-Z0-9._-], at most 249 characters, not '.' or '..', and
    not a name starting '__' (Kafka's internal topics)."""


class KeyError_(EventValidationError):  # trailing underscore: do not shadow the builtin
    """The event key must be str, bytes or None."""


class HeaderError(EventValidationError):
    """Header names must be non-empty str and values str or bytes; names starting 'ce_'/'outbox-' are reserved."""


class AttributeValueError(EventValidationError):
    """A CloudEvents attribute (type, source, subject, id, time) is missing or malformed."""


class SessionStateError(OutboxError):
    """The session or connection cannot take events: it is closed, committed, or has no active transaction."""


class ConfigError(OutboxError, ValueError):
    """A configuration value is invalid; the message names the variable and the accepted values."""


class TimeParseError(ConfigError):
    """A time or duration is malformed or out of range; the message quotes it and says what is accepted."""


class OutboxCollisionError(ConfigError):
    """Another outbox's Kafka state was found under this relay's transactional ids: give each outbox its own
    OUTBOX_RELAY_TRANSACTIONAL_ID_PREFIX (or leave it unset: the default is derived from the outbox)."""


class PoolingModeError(ConfigError):
    """A pooler (PgBouncer) in transaction or statement mode lost this connection's session state: see the docs.

    Writers lose their server-side prepared statements from one transaction to the next: create the engine with
    ``connect_args={"prepare_threshold": None}``, or on PgBouncer 1.21+ set ``max_prepared_statements``
    (docs/write-side.md, "Behind PgBouncer"). The relay needs a session of its own: connect it to Postgres
    directly or through a pool in session mode (docs/operations.md, "PgBouncer")."""


class StoreError(OutboxError):
    """The database operation failed; see the chained cause."""


class DatabaseUnavailableError(StoreError):
    """The database is unreachable or the connection was lost; the operation can be retried."""


class SchemaBehindError(StoreError):
    """The database schema is older than this code; run `outbox migrate upgrade`."""


class PermissionDeniedError(StoreError):
    """The database role lacks a grant; apply the grants printed by `outbox roles sql` (a migration adds none).

    Raised for SQLSTATE 42501 (insufficient_privilege). Apply ``outbox roles sql`` as the schema owner and grant
    the role that does this work (``outbox_app``, ``outbox_relay``, ... by default) to the login; apply it again
    after each ``outbox migrate upgrade``, because grants made earlier do not cover the tables an upgrade adds.
    ``denied`` holds Postgres's own words, e.g. "permission denied for table event".
    """

    def __init__(self, message: str | None = None, *, denied: str = "permission denied") -> None:
        super().__init__(message)
        self.denied = denied


class UnstorableRecordError(StoreError):
    """The inbox row of this record exceeds a Postgres limit (its key is too large for the key-order index).

    Retrying can never help: :class:`~outbox.inbox.Inbox` records the event as dead-lettered without its key
    instead of re-reading it forever. Raised for SQLSTATE 54000 (program_limit_exceeded) on the insert.
    """


class PublishError(OutboxError):
    """Publishing to Kafka failed; see the chained cause."""


class KafkaUnavailableError(PublishError):
    """Kafka is unreachable or timed out; the batch will be retried and nothing is lost."""


class FencedError(PublishError):
    """A newer owner of this shard fenced this producer; this relay must stop working on the shard."""


class PermanentPublishError(PublishError):
    """Kafka will never accept this record (too large, invalid topic, not authorised); it goes to the DLQ."""


class LeaseLostError(OutboxError):
    """This relay instance no longer holds the lease for the shard; another instance owns it now."""


class ConsumerError(OutboxError):
    """The inbox consumer failed; see the chained cause."""


class ReconcileError(OutboxError):
    """The reconciler could not run to a verdict (exit code 2); see the chained cause."""


class ReportSignatureError(OutboxError):
    """The report's signature or content hash does not verify: it was edited or signed with another key."""
