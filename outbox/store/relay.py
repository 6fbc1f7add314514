"""The relay's SQL: claim, mark, attempts and dead letters, leases, instances, status.

Every method runs (and commits) its own short transaction, so the relay never holds a database transaction
open across a Kafka call. All time comparisons use the database clock (``now()``), so instances on hosts with
skewed clocks still agree on which lease has expired.

Fencing on the database side: a lease row carries an ``epoch`` bumped on every change of owner. Marks and
dead-letters are refused (:class:`LeaseLostError`) unless the caller still owns the shard at the epoch it
started with. Marks never block on lease changes (no row lock on the lease), because a mark is always truthful:
the relay marks only what Kafka has committed (see docs/decisions/010-exactly-once-relay.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert

from outbox.config import MAX_SHARDS
from outbox.errors import LeaseLostError
from outbox.event import TIME_MAX, TIME_MIN
from outbox.schema import dead_letter, event, relay_lease, relay_requeue, translate_map
from outbox.store.relay_leases import LeaseQueries, relay_db
from outbox.store.relay_recovery import RecoveryQueries
from outbox.store.relay_status import HeldKey, Instance, Lease, ShardBacklog, Status, StatusQueries, Stranded

__all__ = ["NO_SNAPSHOT", "ClaimSnapshot", "HeldKey", "Instance", "Lease", "Mark", "PendingRow", "RelayStore",
           "ShardBacklog", "Status", "Stranded"]


_PENDING = sa.and_(event.c.published_at.is_(None), event.c.dead_at.is_(None))
# A key is held while it has an open dead letter: its later rows wait so per-key order is kept.
_HELD = sa.exists().where(dead_letter.c.resolved_at.is_(None), dead_letter.c.topic == event.c.topic,
                          dead_letter.c.key == event.c.key)


@dataclass(frozen=True, slots=True)
class PendingRow:
    """One claimed, unpublished event: everything needed to build its Kafka record."""

    id: int
    event_id: uuid.UUID
    topic: str
    key: bytes | None
    payload: bytes
    content_type: str
    type: str
    source: str
    subject: str | None
    time: datetime | None  # None when the stored value is outside what the driver converts (relay.records)
    headers: Any  # the JSONB user headers as JSON text (or parsed), None when empty (decoded by relay.records)
    traceparent: str | None
    key_seq: int | None
    attempts: int


@dataclass(frozen=True, slots=True)
class ClaimSnapshot:
    """What a claim saw besides its rows (xids as xid8): its snapshot's ``xmin``; ``horizon``, an xid assigned
    after that snapshot was taken, so above every xid assigned before it; and the requeue generation."""

    xmin: int
    horizon: int
    gen: int


NO_SNAPSHOT = ClaimSnapshot(0, 0, -1)


@dataclass(frozen=True, slots=True)
class Mark:
    """Where one event landed in Kafka."""

    id: int
    partition: int
    offset: int


# Most events carry no user headers: ship NULL for '[]' so the driver never parses JSON for them (a third of
# the relay's per-row CPU in profiles). The others ship as text, parsed per row by relay.records: a value the
# driver's JSON parser chokes on (nesting deeper than Python's recursion limit) then fails its row, not the claim.
_HEADERS = sa.case((event.c.headers == sa.cast(sa.literal("[]"), JSONB), sa.null()),
                   else_=sa.cast(event.c.headers, sa.Text))
# A time the driver cannot convert (infinity, year 10000, BC: Python's datetime spans years 1..9999) failed the
# whole claim of its shard, for good. A time outside the span writers may give (outbox.event.TIME_MIN..TIME_MAX,
# which keeps a day's margin for the session's time zone) is shipped as NULL, which relay.records refuses for
# that row alone.
_TIME = sa.case((event.c.time.between(sa.literal(TIME_MIN, event.c.time.type),
                                      sa.literal(TIME_MAX, event.c.time.type)), event.c.time),
                else_=sa.null())
_CLAIM_COLUMNS = (event.c.id, event.c.event_id, event.c.topic, event.c.key, event.c.payload,
                  event.c.content_type, event.c.type, event.c.source, event.c.subject, _TIME,
                  _HEADERS, event.c.traceparent, event.c.key_seq, event.c.attempts)


# The two statements run once per batch are built once: building and cache-keying a fresh statement per call
# was a third of the relay's Python time per batch at low rates (py-spy --gil, 8 shards at 1,000 events/s).
# The claim floor (relay/floor.py, ADR 015): skip ids <= :floor unless the requeue generation moved since the
# caller last saw it. The generation is an InitPlan (evaluated once), so ``id > CASE ...`` is an index bound.
# Each row also carries the generation, the snapshot's xmin and the horizon: ``pg_current_xact_id()`` gives this
# claim an xid *after* its snapshot was taken, so every transaction that had an xid before the snapshot has a
# lower one. (``pg_snapshot_xmax`` is not such a bound: it is latestCompletedXid + 1, and a running transaction
# whose xid is above every completed one is below no xmax; that is why the first floor was withdrawn.)
# The xid costs a commit record only when rows come back (the InitPlan runs at the first row); that commit need
# not be durable, so the same InitPlan sets synchronous_commit off for this one implicit transaction: otherwise
# any WAL the read wrote (page pruning, hint-bit images) would make its commit wait for a flush.
_GEN = sa.select(relay_requeue.c.gen).where(relay_requeue.c.id == 1).scalar_subquery()
_FLOOR = sa.case((sa.bindparam("gen", type_=sa.BigInteger) == _GEN, sa.bindparam("floor", type_=sa.BigInteger)),
                 else_=sa.literal(0, sa.BigInteger))
_SNAP = sa.func.pg_current_snapshot()
_ASYNC = sa.func.set_config("synchronous_commit", "off", sa.true())
_HORIZON = (sa.select(sa.cast(sa.cast(sa.func.pg_current_xact_id(), sa.Text), sa.BigInteger))
            .where(_ASYNC.is_not(None)).scalar_subquery())
_CLAIM = (sa.select(*_CLAIM_COLUMNS, sa.func.coalesce(_GEN, -1),
                    sa.cast(sa.cast(sa.func.pg_snapshot_xmin(_SNAP), sa.Text), sa.BigInteger), _HORIZON)
          .where(event.c.shard == sa.bindparam("shard", type_=sa.Integer), _PENDING, ~_HELD, event.c.id > _FLOOR)
          .order_by(event.c.id).limit(sa.bindparam("limit", type_=sa.Integer)))
# The same claim without some topics (whole topics, so whole keys: per-key order holds): the rest of a shard
# whose claim came back full of a refused topic's rows (relay/worker.py).
_CLAIM_SKIPPING = _CLAIM.where(event.c.topic != sa.all_(sa.bindparam("skip", type_=ARRAY(sa.Text))))
_NCOLS = len(_CLAIM_COLUMNS)


def _build_mark() -> sa.Update:
    ids = sa.bindparam("ids", type_=ARRAY(sa.BigInteger))
    v = sa.func.unnest(ids, sa.bindparam("ps", type_=ARRAY(sa.Integer)), sa.bindparam("os", type_=ARRAY(sa.BigInteger))
                       ).table_valued("id", "p", "o").render_derived(name="v", with_types=False)
    # `id = ANY(:ids)` is redundant with the join, but it is what lets the planner fetch the rows by primary key:
    # joined to unnest() alone it cannot estimate the match and chose a sequential scan of the whole table
    # (EXPLAIN: 20k-row table, 147 ms for a 1000-row mark; it grows with the table, not the batch).
    # (Bind names must differ from the event table's column names in an UPDATE.)
    # The lease guard rides in the UPDATE itself (one round trip); only when fewer rows changed than asked
    # (already marked by a previous owner's recovery, or the guard failed) is the lease checked apart.
    owns = sa.exists().where(relay_lease.c.shard == sa.bindparam("lease_shard", type_=sa.Integer),
                             relay_lease.c.owner == sa.bindparam("lease_owner", type_=sa.String),
                             relay_lease.c.epoch == sa.bindparam("lease_epoch", type_=sa.BigInteger))
    return (event.update().where(event.c.id == sa.any_(ids), event.c.id == v.c.id, event.c.published_at.is_(None), owns)
            .values(published_at=sa.func.now(), kafka_partition=v.c.p, kafka_offset=v.c.o,
                    relay_epoch=sa.bindparam("lease_epoch", type_=sa.BigInteger)))


_MARK = _build_mark()


class RelayStore(StatusQueries, LeaseQueries, RecoveryQueries):
    """The relay's view of the outbox database (status queries in ``outbox.store.relay_status``)."""

    def __init__(self, engine: sa.Engine, schema: str = "outbox") -> None:
        tm = translate_map(schema)
        self._schema = schema
        self._engine = engine.execution_options(schema_translate_map=tm) if tm else engine
        self._autocommit = self._engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    # --- claim / mark ------------------------------------------------------------------------------------
    def claim(self, shard: int, limit: int) -> list[PendingRow]:
        """The shard's next pending rows in id order (= per-key commit order), skipping held keys."""
        return self.claim_above(shard, limit, 0, -1)[0]

    def claim_above(self, shard: int, limit: int, floor: int, gen: int,
                    skip_topics: Sequence[str] = ()) -> tuple[list[PendingRow], ClaimSnapshot]:
        """``claim`` that skips ids <= ``floor`` while the requeue generation still equals ``gen``, and the rows
        of ``skip_topics``; also returns the snapshot it read in (None-like zeros when no row came back)."""
        params: dict[str, Any] = {"shard": shard, "limit": limit, "floor": floor, "gen": gen}
        if skip_topics:
            params["skip"] = list(skip_topics)
        # Autocommit: one round trip (no BEGIN/ROLLBACK) for a single read that needs no transaction.
        with relay_db(f"claiming shard {shard}"), self._autocommit.connect() as c:
            rows = c.execute(_CLAIM_SKIPPING if skip_topics else _CLAIM, params).all()
        if not rows:
            return [], NO_SNAPSHOT
        g, xmin, horizon = rows[-1][_NCOLS:]
        return [PendingRow(*r[:_NCOLS]) for r in rows], ClaimSnapshot(int(xmin), int(horizon), int(g))

    def pending_topics(self, shard: int, limit: int) -> set[str]:
        """The topics of the shard's first ``limit`` pending rows (id order, held keys included): where the
        shard's open transaction, if any, can hold records (its rows stay pending until marked)."""
        first = (sa.select(event.c.topic).where(event.c.shard == shard, _PENDING).order_by(event.c.id).limit(limit)
                 .subquery())
        with relay_db(f"reading the pending topics of shard {shard}"), self._autocommit.connect() as c:
            return {str(t) for t in c.execute(sa.select(first.c.topic).distinct()).scalars()}

    def misplaced(self, limit: int) -> dict[int, int]:
        """Pending rows with a shard no relay can have (row id → shard): negative, or at or above
        ``MAX_SHARDS``. No worker ever claims them: written by hand or by a broken writer. Cheap: two ranges of
        the partial index ``ix_event_pending (shard, id)``. (Shards in [OUTBOX_SHARDS, MAX_SHARDS) are not
        misplaced: a shard-count mismatch, reported at start.)"""
        q = (sa.select(event.c.id, event.c.shard)
             .where(sa.or_(event.c.shard < 0, event.c.shard >= MAX_SHARDS), _PENDING)
             .order_by(event.c.id).limit(limit))
        with relay_db("looking for rows with a negative shard"), self._autocommit.connect() as c:
            return {int(i): int(sh) for i, sh in c.execute(q).all()}

    def probe_claim(self) -> None:
        """Run the claim statement once for no rows: raises StoreError when the role may not read a table the
        claim reads (the start-up check for a role not re-granted after an upgrade)."""
        self.claim_above(0, 0, 0, -1)

    def id_sequence_cache(self) -> int:
        """The event id sequence's CACHE (1 unless a DBA changed it; the claim floor needs 1); 0 if not found."""
        q = sa.text("SELECT s.seqcache FROM pg_catalog.pg_sequence s "
                    "WHERE s.seqrelid = pg_get_serial_sequence(:t, 'id')::regclass")
        with relay_db("reading the event id sequence"), self._autocommit.connect() as c:
            v = c.execute(q, {"t": f'"{self._schema}".event'}).scalar()
        return int(v) if v is not None else 0

    def mark_published(self, shard: int, owner: str, epoch: int, marks: Sequence[Mark],
                       before_commit: Callable[[], None] | None = None) -> int:
        """Set published_at/partition/offset/epoch on ``marks`` in one set-based UPDATE; returns rows changed.

        Rows already published are left alone (idempotent: recovery may mark what the old owner marked).
        Raises LeaseLostError if ``owner`` no longer holds ``shard`` at ``epoch``.
        """
        if not marks:
            return 0
        with relay_db(f"marking {len(marks)} rows of shard {shard} published"), self._engine.begin() as c:
            n = int(c.execute(_MARK, {"ids": [m.id for m in marks], "ps": [m.partition for m in marks],
                                      "os": [m.offset for m in marks], "lease_shard": shard,
                                      "lease_owner": owner, "lease_epoch": epoch}).rowcount)
            if n < len(marks):
                self._guard(c, shard, owner, epoch)
            if before_commit is not None:
                before_commit()
        return n

    def record_failures(self, shard: int, owner: str, epoch: int, errors: Mapping[int, str]) -> dict[int, int]:
        """attempts += 1 and last_error for each failed row id; returns the new attempt counts."""
        if not errors:
            return {}
        out: dict[int, int] = {}
        with relay_db(f"recording failures on shard {shard}"), self._engine.begin() as c:
            self._guard(c, shard, owner, epoch)
            for rid, err in errors.items():
                r = c.execute(event.update().where(event.c.id == rid, _PENDING)
                              .values(attempts=event.c.attempts + 1, last_error=err[:4000])
                              .returning(event.c.attempts)).first()
                if r is not None:
                    out[rid] = int(r[0])
        return out

    def dead_letter(self, shard: int, owner: str, epoch: int, row_id: int, *, reason: str, error_class: str) -> bool:
        """Move one pending row to the DLQ (dead_letter row + dead_at); its key is held from now on."""
        src = (sa.select(event.c.id, event.c.event_id, event.c.topic, event.c.key, event.c.key_seq,
                         sa.literal(reason[:4000]), sa.literal(error_class), event.c.attempts)
               .where(event.c.id == row_id, _PENDING))
        ins = insert(dead_letter).from_select(
            ["event_pk", "event_id", "topic", "key", "key_seq", "reason", "error_class", "attempts"], src,
        )
        # A retried row that fails again reopens its dead letter: with DO NOTHING it would be dead but invisible
        # to `outbox dlq list`, and later rows of its key would overtake it.
        ins = ins.on_conflict_do_update(index_elements=["event_pk"], set_={
            "reason": ins.excluded.reason, "error_class": ins.excluded.error_class,
            "attempts": ins.excluded.attempts, "failed_at": sa.func.now(),
            "resolved_at": None, "resolution": None, "resolved_by": None})
        with relay_db(f"dead-lettering row {row_id}"), self._engine.begin() as c:
            self._guard(c, shard, owner, epoch)
            c.execute(ins)
            n = c.execute(event.update().where(event.c.id == row_id, _PENDING)
                          .values(dead_at=sa.func.now(), last_error=reason[:4000])).rowcount
        return bool(n)

    def owns(self, shard: int, owner: str, epoch: int) -> bool:
        """Whether ``owner`` still holds ``shard`` at ``epoch`` (expired but not taken over counts as held)."""
        try:
            with relay_db(f"checking the lease of shard {shard}"), self._engine.connect() as c:
                self._guard(c, shard, owner, epoch)
        except LeaseLostError:
            return False
        return True

    @staticmethod
    def _guard(c: sa.Connection, shard: int, owner: str, epoch: int) -> None:
        ok = c.execute(sa.select(relay_lease.c.epoch).where(
            relay_lease.c.shard == shard, relay_lease.c.owner == owner, relay_lease.c.epoch == epoch)).first()
        if ok is None:
            raise LeaseLostError(f"shard {shard} is no longer owned by {owner} at epoch {epoch}; write refused")
