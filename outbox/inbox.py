"""The consumer helper: each Kafka record is handled *once*, in one transaction of the consumer's database.

For every record, in one DB transaction (``docs/decisions/021-inbox.md``):

1. insert the inbox row (the acknowledgement), deduplicated on ``(consumer_group, event_id)``;
2. on conflict it is a redelivery: skip it (if the copy came from another Kafka position, the event was
   published twice: that copy is recorded in ``inbox_redelivery`` for the reconciler);
3. otherwise run the user's handler with the same connection and a frozen :class:`ReceivedEvent`;
4. commit. Kafka offsets are committed only after the DB commits of the batch, so a crash in between means
   a redelivery, which step 2 absorbs.

A handler that raises is retried (:class:`RetryPolicy`, bounded, jittered backoff, each attempt in a fresh
transaction); then the inbox row is written with outcome ``dead_lettered`` and the error, and the consumer moves
on: the event is recorded, never lost. A record whose inbox row Postgres cannot store (a key too large for the
key-order index) is dead-lettered the same way, without its key and without running the handler. A database
that is unreachable is *not* the handler's fault: nothing is acknowledged, the records are re-read, and
:meth:`Inbox.run_once` raises :class:`~outbox.errors.ConsumerError`.

The handler must not end the inbox's transaction (commit, roll back, close the connection): the inbox then
stops with a :class:`~outbox.errors.ConsumerError` (:mod:`outbox.inbox_guard` says why and what is left).

Loop shape: :meth:`Inbox.run_once` handles one polled batch and returns a :class:`BatchResult`;
:meth:`Inbox.run` is the thin loop around it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from outbox.extras import missing_extra

try:
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "outbox.inbox", "inbox") from exc

from outbox import inbox_args as args
from outbox import inbox_guard as guard
from outbox.config import settings
from outbox.errors import ConfigError, ConsumerError, DatabaseUnavailableError, OutboxError, UnstorableRecordError
from outbox.kafka_consumer import AckPublisher, ConsumerPort, KafkaConsumer, KafkaRecord, Position
from outbox.received import BatchResult, Handler, Outcome, ReceivedEvent, RetryPolicy, session_handler
from outbox.store import inbox as store
from outbox.store import translate_errors

log = logging.getLogger("outbox.inbox")

__all__ = ["BatchResult", "Handler", "Inbox", "Outcome", "ReceivedEvent", "RetryPolicy", "session_handler"]


class _HandlerFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _is_connection_loss(exc: BaseException) -> bool:
    if isinstance(exc, DatabaseUnavailableError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError))


class Inbox:
    """Consume ``topics`` as ``group`` into the database of ``engine``, calling ``handler`` once per event."""

    def __init__(
        self,
        engine: sa.Engine,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        *,
        bootstrap: str | None = None,
        consumer: ConsumerPort | None = None,
        retry: RetryPolicy | None = None,
        schema: str | None = None,
        max_batch: int = 500,
        poll_timeout: float = 1.0,
        ack_topic: str | None = None,
        kafka_config: Mapping[str, Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # Everything is checked before anything connects (outbox.inbox_args says why).
        self.engine, self.group = args.check_engine(engine), args.check_group(group)
        self.topics = args.check_topics(topics)
        args.check_handler(handler)
        self.handler = handler
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
        self.retry = retry or RetryPolicy()
        self.schema = settings().schema if schema is None else args.check_schema(schema)
        self.max_batch, self.poll_timeout = args.check_max_batch(max_batch), poll_timeout
        ack_topic = args.check_ack_topic(ack_topic, bootstrap)
        if consumer is None:
            if not bootstrap:
                raise ConsumerError("Inbox needs bootstrap servers (or a consumer)")
            consumer = KafkaConsumer(bootstrap, self.group, self.topics, kafka_config)
        self.consumer = consumer
        self._acks = AckPublisher(bootstrap, ack_topic) if ack_topic and bootstrap else None
        self._sleep = sleep
        self._registered = False
        self._stopped: str | None = None  # why this inbox refuses to go on (a handler that ended its transaction)

    # -- one batch -------------------------------------------------------------------------------------------

    def run_once(self) -> BatchResult:
        """Poll one batch, handle each record in its own DB transaction, then commit the offsets."""
        if self._stopped is not None:
            raise ConsumerError(self._stopped)
        if not self._registered:
            with translate_errors("registering the subscription"), self.engine.begin() as conn:
                store.register_subscription(conn, self.group, self.topics, self.schema)
            self._registered = True
        records = self.consumer.poll_batch(self.max_batch, self.poll_timeout)
        counts = {o: 0 for o in Outcome}
        copies = 0
        done: dict[Position, int] = {}
        acks: list[dict[str, Any]] = []
        i = 0
        try:
            # One connection for the batch (no pool round trip per record); still one transaction per record.
            with translate_errors("connecting to the inbox database"), self.engine.connect() as conn:
                for i, rec in enumerate(records):  # noqa: B007 - i names the record that failed, below
                    outcome, copied, ev = self._handle(conn, rec)
                    counts[outcome] += 1
                    copies += copied
                    done[(rec.topic, rec.partition)] = rec.offset + 1
                    if self._acks is not None:
                        acks.append(self._ack_record(ev, outcome))
        except OutboxError as exc:
            # Infrastructure failed (not the handler): keep what committed, re-read the rest later.
            self._commit(done, acks)
            self.consumer.rewind(_first_offsets(records[i:]))
            rec = records[i]
            raise ConsumerError(
                f"group {self.group!r}: could not handle {rec.topic}[{rec.partition}]@{rec.offset}: {exc}"
            ) from exc
        self._commit(done, acks)
        result = BatchResult(
            received=len(records), processed=counts[Outcome.PROCESSED], duplicates=counts[Outcome.DUPLICATE],
            copies=copies, dead_lettered=counts[Outcome.DEAD_LETTERED], committed=dict(done),
        )
        if result.moved:
            log.info("inbox %s: %d received, %d processed, %d duplicates (%d from another position), "
                     "%d dead-lettered", self.group, result.received, result.processed, result.duplicates,
                     result.copies, result.dead_lettered)
        return result

    def _commit(self, done: Mapping[Position, int], acks: list[dict[str, Any]]) -> None:
        # Only after every DB commit of these records: the acknowledgement is durable before Kafka forgets.
        if acks and self._acks is not None:
            self._acks.publish(acks)
        if done:
            self.consumer.commit(done)

    def _ack_record(self, ev: ReceivedEvent, outcome: Outcome) -> dict[str, Any]:
        # Every copy is published (duplicates too, with their own position): the reader deduplicates on
        # (group, event id) and, like the inbox, records a copy from another position as a duplicate.
        return {"consumer_group": self.group, "subscribed": self.topics, "event_id": str(ev.event_id),
                "outbox_id": ev.outbox_id, "topic": ev.topic, "kafka_partition": ev.partition,
                "kafka_offset": ev.offset, "key": ev.key.hex() if ev.key is not None else None,
                "key_seq": ev.key_seq, "event_time": ev.time.isoformat() if ev.time else None,
                "processed_at": datetime.now(UTC).isoformat(),
                "outcome": Outcome.PROCESSED.value if outcome is Outcome.DUPLICATE else outcome.value}

    # -- one record ------------------------------------------------------------------------------------------

    def _handle(self, conn: sa.Connection, rec: KafkaRecord) -> tuple[Outcome, bool, ReceivedEvent]:
        ev = ReceivedEvent.from_record(rec)
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=self.retry.wait,
            retry=retry_if_exception_type(_HandlerFailed), reraise=True, sleep=self._sleep,
        )
        try:
            for attempt in retrying:
                with attempt:
                    outcome, copied = self._attempt(conn, ev, attempt.retry_state.attempt_number)
                    return outcome, copied, ev
        except _HandlerFailed as failed:
            log.warning("inbox %s: handler failed %d times on event %s (%s[%d]@%d); dead-lettered: %r",
                        self.group, self.retry.attempts, ev.event_id, ev.topic, ev.partition, ev.offset,
                        failed.cause)
            error = "".join(traceback.format_exception_only(type(failed.cause), failed.cause)).strip()
            return (*self._dead_letter(conn, ev, error, self.retry.attempts), ev)
        except UnstorableRecordError as exc:
            # Re-reading it would fail the same way forever and wedge the group: record it without the key (the
            # indexed part that does not fit), as a dead letter the reconciler lists; the handler never ran.
            log.warning("inbox %s: event %s (%s[%d]@%d) dead-lettered unhandled: %s", self.group, ev.event_id,
                        ev.topic, ev.partition, ev.offset, exc)
            ev = replace(ev, key=None)
            error = f"{exc}; stored without its key, handler not run (see docs/decisions/021-inbox.md)"
            return (*self._dead_letter(conn, ev, error, 0), ev)
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _ack(self, ev: ReceivedEvent, outcome: str, attempts: int, error: str | None = None) -> store.Ack:
        return store.Ack(
            consumer_group=self.group, event_id=ev.event_id, outbox_id=ev.outbox_id, topic=ev.topic,
            partition=ev.partition, offset=ev.offset, key=ev.key, key_seq=ev.key_seq, event_time=ev.time,
            outcome=outcome, attempts=attempts, error=error,
        )

    def _attempt(self, conn: sa.Connection, ev: ReceivedEvent, attempt: int) -> tuple[Outcome, bool]:
        with translate_errors("handling an event"):
            txn = conn.begin()
            try:
                pk = store.acknowledge(conn, self._ack(ev, "processed", attempt), self.schema)
            except UnstorableRecordError:
                txn.rollback()  # the failed insert aborted it; the dead letter needs a fresh one
                raise
            if pk is None:
                copied = self._duplicate(conn, ev)
                txn.commit()
                return Outcome.DUPLICATE, copied
            try:
                self.handler(conn, ev)
            except Exception as exc:
                if _is_connection_loss(exc):
                    if txn.is_active:
                        txn.rollback()
                    raise
                self._check_transaction(conn, txn, pk, ev, attempt)
                if txn.is_active:
                    txn.rollback()
                raise _HandlerFailed(exc) from exc
            self._check_transaction(conn, txn, pk, ev, attempt)
            try:
                store.mark_processed(conn, pk, self.schema)
                txn.commit()
            except Exception as exc:  # e.g. the handler swallowed a DB error and left the transaction aborted
                if txn.is_active:
                    txn.rollback()
                if _is_connection_loss(exc):
                    raise
                raise _HandlerFailed(exc) from exc
        return Outcome.PROCESSED, False

    def _check_transaction(self, conn: sa.Connection, txn: sa.RootTransaction, pk: int, ev: ReceivedEvent,
                           attempt: int) -> None:
        # Carrying on after a handler ended our transaction would repeat the damage on every next record.
        stop = guard.transaction_ended(self.engine, conn, txn, pk=pk, ev=ev, attempt=attempt, group=self.group,
                                       schema=self.schema)
        if stop is not None:
            self._stopped = stop
            log.error("%s", stop)
            raise ConsumerError(stop)

    def _dead_letter(self, conn: sa.Connection, ev: ReceivedEvent, error: str, attempts: int) -> tuple[Outcome, bool]:
        with translate_errors("dead-lettering an event"), conn.begin():
            pk = store.acknowledge(conn, self._ack(ev, "dead_lettered", attempts, error), self.schema)
            if pk is None:  # another member of the group handled it meanwhile (rebalance)
                return Outcome.DUPLICATE, self._duplicate(conn, ev)
        return Outcome.DEAD_LETTERED, False

    def _duplicate(self, conn: sa.Connection, ev: ReceivedEvent) -> bool:
        pos = store.acknowledged_position(conn, self.group, ev.event_id, self.schema)
        if pos is None or pos == (ev.topic, ev.partition, ev.offset):
            return False  # a plain redelivery of the acknowledged copy: the inbox doing its job
        if store.record_copy(conn, self.group, ev.event_id, (ev.topic, ev.partition, ev.offset), self.schema):
            log.warning("inbox %s: event %s arrived again from %s[%d]@%d (first acknowledged at %s[%d]@%d): "
                        "it was published more than once", self.group, ev.event_id, ev.topic, ev.partition,
                        ev.offset, *pos)
        return True

    # -- loop ------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, error_backoff: float = 1.0) -> None:
        """Handle batches until ``stop`` is set; the batch in hand is finished first (soft stop)."""
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except ConsumerError as exc:
                    log.warning("inbox %s: %s; retrying in %.1fs", self.group, exc, error_backoff)
                    stop.wait(error_backoff)
        finally:
            self.close()

    def close(self) -> None:
        self.consumer.close()
        if self._acks is not None:
            self._acks.close()


def _first_offsets(records: Sequence[KafkaRecord]) -> dict[Position, int]:
    first: dict[Position, int] = {}
    for r in records:
        first.setdefault((r.topic, r.partition), r.offset)
    return first
