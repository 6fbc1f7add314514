"""``reconcile()``: outbox events against every consumer group's acknowledgements, over a window.

1. Resolve the window to an id range ``[lo, hi]`` on the producer database, and the database clock's cutoffs:
   events published after ``now - grace`` are in flight, unpublished ones older than ``now - stuck_after`` are
   stuck.
2. In parallel (``jobs`` connections), single-pass aggregates inside Postgres: the outbox side per
   (topic, id bucket, state) and each group's inbox per id bucket, plus the order check, the copies (duplicated
   or replayed) and the dead letters. The two sides may be different databases; only the small digests travel.
3. Per group, compare expected vs acknowledged digests per bucket, corrected for audited replays
   (:mod:`outbox.reconcile.replays`); drill only into buckets that differ (:mod:`outbox.reconcile.drill`).
4. Build the :class:`~outbox.reconcile.model.Report`; optionally record checkpoints of proven ranges.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa

from outbox.config import settings
from outbox.errors import OutboxError, ReconcileError
from outbox.reconcile import checkpoint, signing
from outbox.reconcile.drill import Digests, Scope, Tally, drill_tally
from outbox.reconcile.model import Finding, GroupReport, Kind, Report, stuck_detail
from outbox.reconcile.replays import Replays, bucket_fixes, fold_copies
from outbox.reconcile.scope import ConsumerDatabase, Groups, Options, chunks, discover_groups, resolve_window
from outbox.store import audit as store
from outbox.store import audit_copies, translate_errors


class Progress(Protocol):
    def start(self, label: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class _Silent:
    def start(self, label: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def reconcile(producer: sa.Engine, consumers: Sequence[ConsumerDatabase] = (), options: Options | None = None, *,
              schema: str | None = None, progress: Progress | None = None) -> Report:
    """Reconcile and return the report. Raises :class:`ReconcileError` when it cannot reach a verdict."""
    options = options or Options()
    started = time.monotonic()
    schema = schema or settings().schema
    dbs = list(consumers) or [ConsumerDatabase(producer, schema)]
    try:
        with translate_errors("reconciling"):
            return _Run(producer, schema, options, progress or _Silent()).run(dbs, started)
    except ReconcileError:
        raise
    except OutboxError as exc:
        raise ReconcileError(f"could not reconcile: {exc}") from exc


Results = dict[tuple[str, str | None], list[Any]]
# expected digests, acknowledged digests, buckets that differ, consumer dead letters, delivery-latency bins
Compared = tuple[Digests, Digests, list[int], int, Counter[int]]
# (result tag, engine, store function, positional args after the connection, keyword args)
Task = tuple[tuple[str, str | None], sa.Engine, Callable[..., Any], tuple[Any, ...], dict[str, Any]]
CHART_SAMPLE = 50_000  # ids sampled (systematically, every k-th) for the latency and backlog charts


def _on(engine: sa.Engine, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    with engine.connect() as c, c.begin():
        store.tune(c)
        return fn(c, *args, **kw)


@dataclass
class _Outbox:
    """The outbox side, folded from the scan cells, and the sampled chart data."""

    settled: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # topic -> bucket -> [n, xor]
    states: dict[str, Counter[str]] = field(default_factory=dict)
    unsettled: dict[str, int] = field(default_factory=dict)  # topic -> first bucket with open events
    created: Counter[int] = field(default_factory=Counter)
    published: Counter[int] = field(default_factory=Counter)
    latency: Counter[int] = field(default_factory=Counter)

    def fold(self, cells: list[Any]) -> None:
        for topic, b, state, n, h in cells:
            self.states.setdefault(topic, Counter())[state] += n
            if state == "settled":
                cur = self.settled.setdefault(topic, {}).setdefault(int(b), [0, 0])
                cur[0] += n
                cur[1] ^= int(h or 0)
            elif state in ("pending", "inflight", "stuck"):
                self.unsettled[topic] = min(self.unsettled.get(topic, int(b)), int(b))

    def fold_chart(self, cells: list[Any], nbins: int, step: int) -> None:
        for cb, pb, lb, n in cells:
            self.created[min(max(cb, 1), nbins)] += n * step
            if pb is not None:
                self.published[min(max(pb, 1), nbins)] += n * step
            if lb is not None:
                self.latency[int(lb)] += n * step

    def count(self, topics: Iterable[str], state: str) -> int:
        return sum(self.states.get(t, Counter())[state] for t in topics)


class _Run:
    def __init__(self, producer: sa.Engine, schema: str, o: Options, progress: Progress) -> None:
        self.producer, self.schema, self.o, self.progress = producer, schema, o, progress
        self.results: Results = {}
        self.outbox = _Outbox()
        self.notes: list[str] = []

    def run(self, dbs: Sequence[ConsumerDatabase], started: float) -> Report:
        self.win, self.lo, self.hi, self.t0 = resolve_window(self.producer, self.schema, self.o)
        self.t1 = max(self.win.now.timestamp() + 1, self.t0 + 1)
        self.step = max(1, -(-(self.hi - self.lo + 1) // CHART_SAMPLE))
        groups = discover_groups(dbs, self.o.groups)
        self.replays = Replays.load(self.producer, self.schema, self.lo, self.hi)
        with ThreadPoolExecutor(max_workers=self.o.jobs, thread_name_prefix="reconcile") as pool:
            self._gather(pool, "digests", self._digest_tasks(groups))
            for cells in self.results.get(("outbox", None), []):
                self.outbox.fold(cells)
            for cells in self.results.get(("chart", None), []):
                self.outbox.fold_chart(cells, self.o.bins, self.step)
            compared = {g: self._compare(g, topics) for g, (_db, topics) in groups.items()}
            self._gather(pool, "listing", self._listing_tasks(groups, compared))
            self.progress.start("drill-down", sum(len(c[2]) for c in compared.values()))
            reports = tuple(self._group(pool, g, db, topics, compared[g]) for g, (db, topics) in groups.items())
        report = self._report(groups, reports, started)
        if self.o.checkpoint:
            checkpoint.record(self.producer, self.schema, report, signing.content_hash(report.to_dict()))
        return report

    def _gather(self, pool: ThreadPoolExecutor, label: str, tasks: list[Task]) -> None:
        futs = {pool.submit(_on, engine, fn, *a, **kw): tag for tag, engine, fn, a, kw in tasks}
        self.progress.start(label, len(futs))
        for f in as_completed(futs):
            self.results.setdefault(futs[f], []).append(f.result())
            self.progress.advance()

    def _digest_tasks(self, groups: Groups) -> list[Task]:
        """The single-pass scans: the order check (longest, one piece) first, then outbox and acks in id chunks,
        copies and the sampled charts."""
        o, lo, hi, win, sch = self.o, self.lo, self.hi, self.win, self.schema
        scan = {"bits": o.bucket_bits, "algo": o.algorithm}
        tasks: list[Task] = [(("order", g), db.engine, store.out_of_order, (db.schema, g, lo, hi), {"cap": o.cap})
                             for g, (db, _t) in groups.items()]
        # Copies next: after a large replay they are the second longest piece.
        tasks += [(("copies", g), db.engine, audit_copies.copies, (db.schema, g, lo, hi),
                   {"audits": self.replays.audits, "cap": o.cap, "bits": o.sub_bits, "algo": o.algorithm})
                  for g, (db, _t) in groups.items()]
        tasks += [(("outbox", None), self.producer, store.outbox_cells, (sch, a, z),
                   {"cutoff": win.cutoff, "stuck_before": win.stuck_before, **scan})
                  for a, z in chunks(lo, hi, o.jobs)]
        tasks.append((("chart", None), self.producer, store.outbox_chart, (sch, lo, hi),
                      {"step": self.step, "t0": self.t0, "t1": self.t1, "nbins": o.bins}))
        for g, (db, _t) in groups.items():
            args = (db.schema, g, lo, hi)
            tasks += [(("acks", g), db.engine, store.ack_cells, (db.schema, g, a, z), scan)
                      for a, z in chunks(lo, hi, o.jobs)]
            tasks += [(("latency", g), db.engine, store.ack_chart, args, {"step": self.step})]
        return tasks

    def _listing_tasks(self, groups: Groups, compared: dict[str, Compared]) -> list[Task]:
        """Named stuck and dead-lettered events: only queried when the scans counted some."""
        o, lo, hi, sch = self.o, self.lo, self.hi, self.schema
        everything = list(self.outbox.states)
        tasks: list[Task] = []
        if self.outbox.count(everything, "stuck"):
            tasks.append((("stuck", None), self.producer, store.stuck, (sch, lo, hi),
                          {"stuck_before": self.win.stuck_before, "cap": o.cap}))
        if self.outbox.count(everything, "dead"):
            tasks.append((("relay_dead", None), self.producer, store.relay_dead, (sch, lo, hi), {"cap": o.cap}))
        for g, (db, _t) in groups.items():
            if compared[g][3]:
                tasks.append((("dead", g), db.engine, store.consumer_dead, (db.schema, g, lo, hi), {"cap": o.cap}))
        return tasks

    def _fixes(self, g: str) -> dict[int, int]:  # sub-bucket -> digest correction of the group's replayed acks
        copies: audit_copies.Copies = self.results[("copies", g)][0]
        return copies.fixes

    def _compare(self, g: str, topics: tuple[str, ...]) -> Compared:
        """Expected vs acknowledged digests per bucket, the buckets that differ, dead letters, latency bins."""
        expected: dict[int, list[int]] = {}
        for t in topics:
            for b, (n, h) in self.outbox.settled.get(t, {}).items():
                cur = expected.setdefault(b, [0, 0])
                cur[0] += n
                cur[1] ^= h
        acks: dict[int, list[int]] = {}
        dead, lat = 0, Counter[int]()
        for cells in self.results.get(("acks", g), []):
            for b, is_dead, n, h in cells:
                cur = acks.setdefault(int(b), [0, 0])
                cur[0] += n
                cur[1] ^= int(h or 0)
                dead += n if is_dead else 0
        for cells in self.results.get(("latency", g), []):
            for lb, n in cells:
                if lb is not None:
                    lat[int(lb)] += n * self.step
        for b, x in bucket_fixes(self._fixes(g), self.o.bucket_bits - self.o.sub_bits).items():
            if b in acks:  # replayed acknowledgements, moved to the position the outbox records
                acks[b][1] ^= x
        e = {b: (v[0], v[1]) for b, v in expected.items()}
        a = {b: (v[0], v[1]) for b, v in acks.items()}
        return e, a, sorted(b for b in set(e) | set(a) if e.get(b) != a.get(b)), dead, lat

    def _group(self, pool: ThreadPoolExecutor, g: str, db: ConsumerDatabase, topics: tuple[str, ...],
               cmp: Compared) -> GroupReport:
        expected, acks, differ, consumer_dead, lat = cmp
        o, ts, tally = self.o, set(topics), Tally(cap=self.o.cap)
        with self.producer.connect() as c:  # checkpoints live beside the outbox, where pruning happens
            ranges = tuple(store.checkpoint_ranges(c, self.schema, g))
        scope = Scope(self.producer, db.engine, self.schema, db.schema, g, frozenset(topics), self.lo, self.hi,
                      o.bucket_bits, o.sub_bits, o.algorithm, self.win.cutoff, self.win.stuck_before, ranges,
                      self.replays.covering, self._fixes(g))
        # Buckets are drilled in parallel, each into its own tally, merged in bucket order (deterministic names).
        futs = [pool.submit(drill_tally, scope, b, expected.get(b, (0, 0)), acks.get(b, (0, 0)), o.cap) for b in differ]
        for f in futs:
            tally.merge(f.result())
            self.progress.advance()
        r = self.results
        ooo_n, ooo_rows = r[("order", g)][0]
        for x in ooo_rows:
            tally.add(Kind.OUT_OF_ORDER, Finding.of(Kind.OUT_OF_ORDER, x, f"acknowledged after seq {x.after_seq}"), n=0)
        tally.counts[Kind.OUT_OF_ORDER] += ooo_n
        fold_copies(tally, r[("copies", g)][0])
        for x in _one(r, ("stuck", None)):
            if x.topic in ts:
                tally.add(Kind.STUCK, Finding.of(Kind.STUCK, x, stuck_detail(x, self.win.now), id_attr="id"), n=0)
        for x in _one(r, ("relay_dead", None)):
            if x.topic in ts:
                tally.add(Kind.DEAD_LETTERED, Finding.of(Kind.DEAD_LETTERED, x, f"relay dead letter: {x.reason}",
                                                         id_attr="id"), n=0)
        for x in _one(r, ("dead", g)):
            tally.add(Kind.DEAD_LETTERED, Finding.of(Kind.DEAD_LETTERED, x, f"handler failed {x.attempts}x: "
                                                     f"{x.error}"), n=0)
        exp_n = sum(n for n, _h in expected.values())
        if exp_n and not any(n for n, _h in acks.values()):
            self.notes.append(f"group {g!r} has no acknowledgement at all in {db.label}: if its inbox lives in "
                              "another database, pass that database with --inbox-database-url")
        missing = tally.counts[Kind.MISSING]
        rep = GroupReport(
            group=g, database=db.label, topics=topics, expected=exp_n, acknowledged=exp_n - missing, missing=missing,
            duplicated=tally.counts[Kind.DUPLICATED], replayed=tally.counts[Kind.REPLAYED],
            out_of_order=tally.counts[Kind.OUT_OF_ORDER],
            stuck=self.outbox.count(topics, "stuck"), dead_lettered=consumer_dead + self.outbox.count(topics, "dead"),
            unexpected=tally.counts[Kind.UNEXPECTED],
            in_flight=self.outbox.count(topics, "inflight") + self.outbox.count(topics, "pending"),
            findings=tuple(f for k in Kind for f in tally.named[k]), latency_ms=tuple(sorted(lat.items())),
        )
        cp = checkpoint.proven_range(rep, expected, self.outbox.unsettled, lo=self.lo, hi=self.hi,
                                     bits=o.bucket_bits, algo=o.algorithm)
        return rep if cp is None else replace(rep, checkpoint=cp)

    def _report(self, groups: Groups, reports: tuple[GroupReport, ...], started: float) -> Report:
        ob, o, win = self.outbox, self.o, self.win
        subscribed = {t for _d, ts in groups.values() for t in ts}
        events = sum(n for t in subscribed for n, _h in ob.settled.get(t, {}).values())
        width = (self.t1 - self.t0) / o.bins
        backlog, c_sum, p_sum = [], 0, 0
        for i in range(1, o.bins + 1):
            c_sum, p_sum = c_sum + ob.created[i], p_sum + ob.published[i]
            backlog.append((datetime.fromtimestamp(self.t0 + i * width, UTC).isoformat(), c_sum, p_sum))
        findings = [Finding.of(Kind.STUCK, x, stuck_detail(x, win.now), id_attr="id")
                    for x in _one(self.results, ("stuck", None))]
        findings += [Finding.of(Kind.DEAD_LETTERED, x, f"relay dead letter: {x.reason}", id_attr="id")
                     for x in _one(self.results, ("relay_dead", None))]
        all_topics = list(ob.states)
        in_flight = ob.count(all_topics, "inflight") + ob.count(all_topics, "pending")
        # With events in flight the verdict is inconclusive and says so itself; an empty window is proven, vacuously.
        if events == 0 and not findings and not in_flight:
            self.notes.append("the window holds no published outbox events, so nothing was compared: check "
                              "--from-id/--to-id or --since/--until if you expected some")
        return Report(
            generated_at=datetime.now(UTC), producer_database=self.producer.url.render_as_string(hide_password=True),
            window=win, algorithm=o.algorithm, bucket_bits=o.bucket_bits, events=events, groups=reports,
            stuck=ob.count(all_topics, "stuck"), relay_dead_lettered=ob.count(all_topics, "dead"),
            in_flight=in_flight, outbox_findings=tuple(findings), backlog=tuple(backlog),
            publish_latency_ms=tuple(sorted(ob.latency.items())), chart_step=self.step, notes=tuple(self.notes),
            elapsed_s=time.monotonic() - started, replays=self.replays.report(),
        )


def _one(results: Results, tag: tuple[str, str | None]) -> list[Any]:
    got = results.get(tag)
    return list(got[0]) if got else []
