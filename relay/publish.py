"""One batch, one Kafka transaction: produce every row, flush once, add the checkpoint, commit.

Never waits per message (prior-art pitfall 1): records are queued back to back and their deliveries collected by
a single flush. The flush comes *before* the checkpoint record so the checkpoint can carry each row's
partition/offset; the commit then makes the events and the checkpoint visible together, or neither.

Failures are attributed precisely so that only the guilty row's key stops (docs/decisions/012):

* a row no record can be built from (``relay.records``): undecodable, dead-lettered at once; later rows of its
  key are left out of this transaction;
* a topic Kafka will never take records for (``TopicGate``, from the metadata, before the transaction opens):
  its rows stay out of the transaction; once it has been refused for a while (not merely being created on use),
  each check that finds it still refused counts one attempt;
* the client refuses a record at once (``send`` raises PermanentPublishError): that row failed; later rows of
  its key are left out of this transaction (kept pending, in order); the rest of the batch commits;
* the broker refuses records (a delivery error): Kafka fails the whole transaction, and a record batch is
  refused as a unit, so every refused row is only a *suspect*. The transaction is aborted; the worker then
  retries suspects alone, where a refusal is attributable, and the other rows apart (``choose``);
* the broker refuses the transaction as a whole (``flush`` raises PermanentPublishError, e.g.
  TOPIC_AUTHORIZATION_FAILED when a partition is added to it): once a transaction of the checkpoint partition
  alone proves writable (else the producer as a whole is refused: transient, no row charged), with one topic in
  it, that topic's rows are refused; with several, its topics become *suspect topics*, published apart until the
  guilty one is found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from outbox.errors import FencedError, KafkaUnavailableError, PermanentPublishError, PublishError
from outbox.store.relay import Mark, PendingRow
from relay import checkpoint
from relay.ports import Transport
from relay.records import ordering_key, to_record


@dataclass(frozen=True)
class Published:
    """What one transaction achieved."""

    marks: tuple[Mark, ...] = ()  # committed rows with their partition/offset
    refused: dict[int, str] = field(default_factory=dict)  # row id → reason, attributable (attempt counts)
    suspects: dict[int, str] = field(default_factory=dict)  # row id → reason, refused with others (aborted)
    undecodable: dict[int, str] = field(default_factory=dict)  # row id → why no record can be built from it
    suspect_topics: dict[str, str] = field(default_factory=dict)  # topic → reason: a transaction of these topics
    # was refused as a whole (aborted); one of them is to blame
    broken: bool = False  # the transport could not abort the refused transaction: it must be replaced
    flush_s: float = 0.0  # from the last record queued to every delivery known
    commit_s: float = 0.0  # checkpoint + commit_transaction


def publish_batch(transport: Transport, rows: list[PendingRow], *, shard: int, epoch: int, writer: checkpoint.Writer,
                  checkpoint_partition: int, sent: Callable[[], None] | None = None,
                  midway: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> Published:
    """Publish ``rows`` (in id order) in one transaction, consuming the list: each row (and its payload) is
    dropped once librdkafka holds its copy, so a batch's memory is freed while it is still being flushed.
    ``sent`` is called once every record is queued (the worker frees its producing slot there). ``midway``, if
    given, is called once half the batch is sent, after a flush that puts it on the broker inside the open
    transaction (the MID_PRODUCE step of relay/hooks.py; the relay gives none).

    Raises PublishError for transient/fencing failures; the transport must then be replaced (its transaction
    state is unknown)."""
    out = _Sent()
    try:
        transport.begin()
        transport.send_checkpoint(checkpoint_partition, writer.opening_key, checkpoint.opening(shard, epoch))
        _send_all(transport, rows, midway, out)
    finally:
        if sent is not None:
            sent()
    if not out.heads:
        transport.abort()
        return Published(refused=out.refused, undecodable=out.undecodable)
    return _finish(transport, out, shard=shard, epoch=epoch, writer=writer,
                   checkpoint_partition=checkpoint_partition, clock=clock)


@dataclass
class _Sent:
    """What ``_send_all`` did with a batch's rows."""

    refused: dict[int, str] = field(default_factory=dict)
    undecodable: dict[int, str] = field(default_factory=dict)
    heads: list[int] = field(default_factory=list)  # sent rows first of their key in this transaction
    topics: set[str] = field(default_factory=set)  # topics of the records sent


def _send_all(transport: Transport, rows: list[PendingRow], midway: Callable[[], None] | None, out: _Sent) -> None:
    blocked: set[tuple[str, bytes]] = set()
    seen: set[tuple[str, bytes]] = set()
    half = len(rows) // 2
    rows.reverse()
    i = -1
    while rows:
        row = rows.pop()
        i += 1
        k = ordering_key(row)
        if k is not None and k in blocked:
            continue  # an earlier row of this key failed: sending this one would overtake it
        try:
            record = to_record(row)
        except PermanentPublishError as exc:
            out.undecodable[row.id] = str(exc)
            if k is not None:
                blocked.add(k)
            continue
        try:
            transport.send(record)
        except PermanentPublishError as exc:
            out.refused[row.id] = str(exc)
            if k is not None:
                blocked.add(k)
            continue
        if k is None or k not in seen:
            out.heads.append(row.id)
            if k is not None:
                seen.add(k)
        out.topics.add(row.topic)
        if i == half and midway is not None:
            transport.flush()  # make sure part of the transaction really reached the broker
            midway()


def _finish(transport: Transport, out: _Sent, *, shard: int, epoch: int, writer: checkpoint.Writer,
            checkpoint_partition: int, clock: Callable[[], float]) -> Published:
    t0 = clock()
    try:
        deliveries = transport.flush()
    except PermanentPublishError as exc:
        return _refused_as_a_whole(transport, out, str(exc), checkpoint_partition=checkpoint_partition,
                                   probe=checkpoint.probe(shard, epoch), key=writer.opening_key)
    flushed = clock()
    errors = {d.ref: d.error for d in deliveries if d.error is not None}
    if errors:
        for e in errors.values():
            if isinstance(e, FencedError):
                raise e
        suspects = {ref: str(e) for ref, e in errors.items() if isinstance(e, PermanentPublishError)}
        if not suspects:
            raise next(iter(errors.values()))
        transport.abort()
        return Published(refused=out.refused, suspects=suspects, undecodable=out.undecodable)
    marks = tuple(Mark(d.ref, d.partition, d.offset) for d in deliveries)
    transport.send_checkpoint(checkpoint_partition, writer.key, writer.record(shard, epoch, marks))
    transport.commit()
    return Published(marks=marks, refused=out.refused, undecodable=out.undecodable, flush_s=flushed - t0,
                     commit_s=clock() - flushed)


def _refused_as_a_whole(transport: Transport, out: _Sent, reason: str, *, checkpoint_partition: int, probe: bytes,
                        key: bytes) -> Published:
    """The broker refused the transaction, not a record: with one topic in it, that topic is to blame (its rows
    that came first of their key are refused); with several, they are all suspects until published apart.

    Every transaction also writes the checkpoint partition, so first the checkpoint partition alone must prove
    writable (``checkpoint_writable``); otherwise the refusal is the producer's (WRITE revoked on the checkpoint
    topic, say) and charging the event rows would dead-letter healthy ones."""
    try:
        transport.abort()
    except PublishError:  # librdkafka may end such a transaction only by failing fatally: replace the producer
        # The checkpoint is proven by the replacement's recovery probe before any row is charged (the worker).
        return _blame(out, reason, broken=True)
    checkpoint_writable(transport, checkpoint_partition, key, probe, reason)
    return _blame(out, reason, broken=False)


def _blame(out: _Sent, reason: str, *, broken: bool) -> Published:
    if len(out.topics) == 1:
        refused = {**out.refused, **dict.fromkeys(out.heads, reason)}
        return Published(refused=refused, undecodable=out.undecodable, broken=broken)
    return Published(refused=out.refused, undecodable=out.undecodable, broken=broken,
                     suspect_topics=dict.fromkeys(sorted(out.topics), reason))


def checkpoint_writable(transport: Transport, partition: int, key: bytes, probe: bytes, reason: str) -> None:
    """Prove that a transaction of the checkpoint partition alone commits its record (``probe_end``: one record,
    acknowledged, aborted, so never visible), after ``reason`` refused a whole transaction.

    Raises KafkaUnavailableError when it fails too: the refusal is then of the producer as a whole, not of an
    event topic, so no row is charged and the batch is retried like any transient failure (FencedError as is)."""
    try:
        transport.probe_end(partition, key, probe)
    except FencedError:
        raise
    except PublishError as exc:
        raise KafkaUnavailableError(
            f"{reason}; a transaction of the checkpoint partition alone is refused too ({exc}): the producer as a "
            "whole is refused (check its WRITE grant on the checkpoint topic, OUTBOX_RELAY_CHECKPOINT_TOPIC), not "
            "an event topic; no row is charged, retrying") from exc


def choose(rows: list[PendingRow], suspects: Mapping[int, str], suspect_topics: Mapping[str, str],
           isolating: bool) -> list[PendingRow]:
    """The rows of this round's transaction (``rows`` itself when there is no suspect among them).

    With suspects, rounds alternate. An isolating round publishes what makes a refusal attributable: the first
    row of the earliest suspect's key alone (``isolate``), else the rows of the first suspect topic alone. The
    other rounds publish every row that is not a suspect, not of a suspect's key and not of a suspect topic, so
    the rest of the shard keeps flowing while the culprit is found. A round with nothing to do takes the other's.
    """
    if not suspects and not suspect_topics:
        return rows
    held = {k for r in rows if r.id in suspects if (k := ordering_key(r)) is not None}
    flow = [r for r in rows
            if r.id not in suspects and r.topic not in suspect_topics and ordering_key(r) not in held]
    if len(flow) == len(rows):
        return rows
    if any(r.id in suspects for r in rows):
        alone = isolate(rows, set(suspects))
    else:
        topic = next(r.topic for r in rows if r.topic in suspect_topics)
        alone = [r for r in rows if r.topic == topic]
    return alone if isolating or not flow else flow


@dataclass(frozen=True)
class _Refused:
    reason: str
    since: float  # when a check first found the topic refused (since then, every check has)
    checked: float  # the last check
    wait: float  # from the last check to the next


class TopicGate:
    """Topics Kafka will never take records for, read from the metadata before a transaction opens
    (``Transport.topic_refusal``), per shard worker.

    A topic's first refusal counts nothing: with ``auto.create.topics.enable=true`` (Kafka's default) the very
    metadata request that finds a topic missing makes the broker create it, and answers UNKNOWN_TOPIC_OR_PART
    all the same. The topic is checked again after ``first_recheck_s``, then at doubling intervals up to
    ``recheck_s``, so a topic created on use is picked up within a few tenths of a second. A check counts one
    attempt for its rows only once the topic has been refused for ``recheck_s`` (long past any creation); in
    between the rows wait without counting. So a missing topic's rows are dead-lettered after ``max_attempts``
    counted checks, about ``max_attempts * recheck_s`` seconds: time to create the topic (then its rows just
    flow), and never a stalled shard.
    """

    _MAX_REMEMBERED = 1024  # refused topics kept; beyond, the stale ones are forgotten (re-checked when seen)

    def __init__(self, recheck_s: float, first_recheck_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._recheck_s = recheck_s
        self._first_s = min(recheck_s, recheck_s if first_recheck_s is None else first_recheck_s)
        self._clock = clock
        self._refused: dict[str, _Refused] = {}

    def screen(self, transport: Transport, topics: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """For each refused topic of ``topics``: (reason, whether this refusal counts an attempt)."""
        now = self._clock()
        out: dict[str, tuple[str, bool]] = {}
        for t in dict.fromkeys(topics):
            known = self._refused.get(t)
            if known is not None and now - known.checked < known.wait:
                out[t] = (known.reason, False)
                continue
            reason = transport.topic_refusal(t)
            if reason is None:
                self._refused.pop(t, None)
                continue
            if known is None:  # first sighting: maybe being created by this very request
                known = _Refused(reason, now, now, self._first_s)
            else:
                known = _Refused(reason, known.since, now, min(self._recheck_s, known.wait * 2))
            self._refused[t] = known
            out[t] = (reason, now - known.since >= self._recheck_s)
        if len(self._refused) > self._MAX_REMEMBERED:
            self._refused = {t: v for t, v in self._refused.items() if now - v.checked < self._recheck_s}
        return out


def isolate(rows: Sequence[PendingRow], suspects: set[int]) -> list[PendingRow]:
    """The single row to publish alone so a broker refusal becomes attributable.

    It is the first row (in id order) of the earliest suspect's key, so isolating never overtakes an earlier
    row of that key. Returns ``rows`` unchanged when none of them is a suspect.
    """
    first = next((r for r in rows if r.id in suspects), None)
    if first is None:
        return list(rows)
    k = ordering_key(first)
    if k is None:
        return [first]
    return [next(r for r in rows if ordering_key(r) == k)]

