"""One batch, one Kafka transaction: produce every row, flush once, add the checkpoint, commit.

Never waits per message (prior-art pitfall 1): records are queued back to back and their deliveries collected by
a single flush. The flush comes *before* the checkpoint record so the checkpoint can carry each row's
partition/offset; the commit then makes the events and the checkpoint visible together, or neither.

Failures are attributed precisely so that only the guilty row's key stops (docs/decisions/012):

* a row no record can be built from (``relay.records``): undecodable, dead-lettered at once; later rows of its
  key are left out of this transaction;
* a topic Kafka will never take records for (``TopicGate``, from the metadata, before the transaction opens):
  its rows stay out of the transaction, and each check that finds it still refused counts one attempt;
* the client refuses a record at once (``send`` raises PermanentPublishError): that row failed; later rows of
  its key are left out of this transaction (kept pending, in order); the rest of the batch commits;
* the broker refuses records (a delivery error): Kafka fails the whole transaction, and a record batch is
  refused as a unit, so every refused row is only a *suspect*. The transaction is aborted; the worker then
  retries suspects alone, where a refusal is attributable, and the other rows apart (``choose``);
* the broker refuses the transaction as a whole (``flush`` raises PermanentPublishError, e.g.
  TOPIC_AUTHORIZATION_FAILED when a partition is added to it): with one topic in it, that topic's rows are
  refused; with several, its topics become *suspect topics*, published apart until the guilty one is found.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from outbox.errors import FencedError, PermanentPublishError, PublishError
from outbox.store.relay import Mark, PendingRow
from relay import checkpoint
from relay.config_values import KillPoint
from relay.faults import Faults
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
                  checkpoint_partition: int, faults: Faults, sent: Callable[[], None] | None = None,
                  clock: Callable[[], float] = time.monotonic) -> Published:
    """Publish ``rows`` (in id order) in one transaction, consuming the list: each row (and its payload) is
    dropped once librdkafka holds its copy, so a batch's memory is freed while it is still being flushed.
    ``sent`` is called once every record is queued (the worker frees its producing slot there).

    Raises PublishError for transient/fencing failures; the transport must then be replaced (its transaction
    state is unknown)."""
    out = _Sent()
    try:
        transport.begin()
        transport.send_checkpoint(checkpoint_partition, writer.opening_key, checkpoint.opening(shard, epoch))
        _send_all(transport, rows, faults, out)
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


def _send_all(transport: Transport, rows: list[PendingRow], faults: Faults, out: _Sent) -> None:
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
        if i == half and faults.armed(KillPoint.MID_PRODUCE):
            transport.flush()  # make sure part of the transaction really reached the broker
            faults.at(KillPoint.MID_PRODUCE)


def _finish(transport: Transport, out: _Sent, *, shard: int, epoch: int, writer: checkpoint.Writer,
            checkpoint_partition: int, clock: Callable[[], float]) -> Published:
    t0 = clock()
    try:
        deliveries = transport.flush()
    except PermanentPublishError as exc:
        return _refused_as_a_whole(transport, out, str(exc))
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


def _refused_as_a_whole(transport: Transport, out: _Sent, reason: str) -> Published:
    """The broker refused the transaction, not a record: with one topic in it, that topic is to blame (its rows
    that came first of their key are refused); with several, they are all suspects until published apart."""
    try:
        transport.abort()
        broken = False
    except PublishError:  # librdkafka may end such a transaction only by failing fatally: replace the producer
        broken = True
    if len(out.topics) == 1:
        refused = {**out.refused, **dict.fromkeys(out.heads, reason)}
        return Published(refused=refused, undecodable=out.undecodable, broken=broken)
    return Published(refused=out.refused, undecodable=out.undecodable, broken=broken,
                     suspect_topics=dict.fromkeys(sorted(out.topics), reason))


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


class TopicGate:
    """Topics Kafka will never take records for, read from the metadata before a transaction opens
    (``Transport.topic_refusal``), per shard worker.

    Each check that finds a topic still refused counts one attempt for its rows; the next check comes only after
    ``recheck_s``, and in between the rows wait without counting. So a missing topic's rows are dead-lettered
    after ``max_attempts`` checks, about ``(max_attempts - 1) * recheck_s`` seconds: time to create the topic
    (then its rows just flow), and never a stalled shard.
    """

    _MAX_REMEMBERED = 1024  # refused topics kept; beyond, the stale ones are forgotten (re-checked when seen)

    def __init__(self, recheck_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._recheck_s = recheck_s
        self._clock = clock
        self._refused: dict[str, tuple[str, float]] = {}  # topic → (reason, when it was checked)

    def screen(self, transport: Transport, topics: Iterable[str]) -> dict[str, tuple[str, bool]]:
        """For each refused topic of ``topics``: (reason, whether it was checked just now, i.e. counts)."""
        now = self._clock()
        out: dict[str, tuple[str, bool]] = {}
        for t in dict.fromkeys(topics):
            known = self._refused.get(t)
            if known is not None and now - known[1] < self._recheck_s:
                out[t] = (known[0], False)
                continue
            reason = transport.topic_refusal(t)
            if reason is None:
                self._refused.pop(t, None)
                continue
            self._refused[t] = (reason, now)
            out[t] = (reason, True)
        if len(self._refused) > self._MAX_REMEMBERED:
            self._refused = {t: v for t, v in self._refused.items() if now - v[1] < self._recheck_s}
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


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, PublishError) and not isinstance(exc, FencedError | PermanentPublishError)
