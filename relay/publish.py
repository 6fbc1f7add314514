"""One batch, one Kafka transaction: produce every row, flush once, add the checkpoint, commit.

Never waits per message (prior-art pitfall 1): records are queued back to back and their deliveries collected by
a single flush. The flush comes *before* the checkpoint record so the checkpoint can carry each row's
partition/offset; the commit then makes the events and the checkpoint visible together, or neither.

Failures are attributed precisely so that only the guilty row's key stops:

* the client refuses a record at once (``send`` raises PermanentPublishError): that row failed; later rows of
  its key are left out of this transaction (kept pending, in order); the rest of the batch commits;
* the broker refuses records (a delivery error): Kafka fails the whole transaction, and a record batch is
  refused as a unit, so every refused row is only a *suspect*. The transaction is aborted; the worker then
  retries suspects alone, where a refusal is attributable (see ``relay.worker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
    try:
        transport.begin()
        transport.send_checkpoint(checkpoint_partition, writer.opening_key, checkpoint.opening(shard, epoch))
        refused, n_sent = _send_all(transport, rows, faults)
    finally:
        if sent is not None:
            sent()
    if n_sent == 0:
        transport.abort()
        return Published(refused=refused)
    return _finish(transport, refused, shard=shard, epoch=epoch, writer=writer,
                   checkpoint_partition=checkpoint_partition, clock=clock)


def _send_all(transport: Transport, rows: list[PendingRow], faults: Faults) -> tuple[dict[int, str], int]:
    refused: dict[int, str] = {}
    blocked: set[tuple[str, bytes]] = set()
    sent = 0
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
            transport.send(to_record(row))
        except PermanentPublishError as exc:
            refused[row.id] = str(exc)
            if k is not None:
                blocked.add(k)
            continue
        sent += 1
        if i == half and faults.armed(KillPoint.MID_PRODUCE):
            transport.flush()  # make sure part of the transaction really reached the broker
            faults.at(KillPoint.MID_PRODUCE)
    return refused, sent


def _finish(transport: Transport, refused: dict[int, str], *, shard: int, epoch: int, writer: checkpoint.Writer,
            checkpoint_partition: int, clock: Callable[[], float]) -> Published:
    t0 = clock()
    deliveries = transport.flush()
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
        return Published(refused=refused, suspects=suspects)
    marks = tuple(Mark(d.ref, d.partition, d.offset) for d in deliveries)
    transport.send_checkpoint(checkpoint_partition, writer.key, writer.record(shard, epoch, marks))
    transport.commit()
    return Published(marks=marks, refused=refused, flush_s=flushed - t0, commit_s=clock() - flushed)


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
