"""Test harness for the relay: write events with ``outbox.enqueue``, run real relay processes, verify.

Verification is independent of the relay's code: Kafka is read by ``stack.verify.consume_all`` (read_committed)
and Kafka's own ``TransactionsCommand find-hanging``; the table is read with plain SQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import sqlalchemy as sa

import outbox
from stack.process import REPO_ROOT, free_port
from stack.verify import consume_all, find_hanging


def dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def write_events(url: str, topic: str, n: int, *, keys: int = 10, payload: bytes | None = None,
                 per_txn: int = 50, key_prefix: str = "k") -> list[uuid.UUID]:
    """Commit ``n`` events over ``keys`` keys (round robin) in transactions of ``per_txn``; returns event ids."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    ids: list[uuid.UUID] = []
    try:
        for start in range(0, n, per_txn):
            evs = []
            for i in range(start, min(n, start + per_txn)):
                data = payload if payload is not None else None
                evs.append(outbox.Event(topic=topic, type="test.event", key=f"{key_prefix}{i % keys}",
                                        data=data if data is not None else {"i": i},
                                        content_type="application/octet-stream" if data is not None else None))
            with eng.begin() as c:
                ids.extend(s.event_id for s in outbox.enqueue(c, *evs))
    finally:
        eng.dispose()
    return ids


def scalar(url: str, sql: str, *args: object) -> object:
    with psycopg.connect(dsn(url)) as c:
        row = c.execute(sql, args).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


def wait_until(cond: Callable[[], bool], timeout: float, what: str | Callable[[], str],
               interval: float = 0.1) -> float:
    """Poll ``cond`` until true; returns the seconds it took. Fails the test with ``what`` on timeout: pass a
    callable when the message quotes a relay's log, so it shows the log as it was at the timeout."""
    t0 = time.monotonic()
    while True:
        if cond():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


def pending(url: str, schema: str = "outbox") -> int:
    return int(scalar(url, f"SELECT count(*) FROM {schema}.event WHERE published_at IS NULL AND dead_at IS NULL"))  # type: ignore[arg-type]


@dataclass
class Verdict:
    events: int
    seen: int
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    order_violations: list[str] = field(default_factory=list)
    unpublished: int = 0
    unmarked: list[str] = field(default_factory=list)
    wrong_offsets: int = 0
    hanging: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.order_violations or self.unpublished
                    or self.unmarked or self.wrong_offsets or self.hanging)

    def __str__(self) -> str:
        return (f"events={self.events} seen={self.seen} lost={len(self.lost)} {self.lost[:5]} "
                f"duplicates={len(self.duplicates)} {self.duplicates[:5]} order={self.order_violations[:5]} "
                f"unpublished={self.unpublished} unmarked={len(self.unmarked)} "
                f"wrong_offsets={self.wrong_offsets} hanging={self.hanging}")


def verify(url: str, bootstrap: str, topics: Iterable[str], *, expect_all_published: bool = True,
           check_hanging: bool = True, timeout: float = 90, settle_s: float = 10.0, schema: str = "outbox") -> Verdict:
    """Every non-dead-lettered row of ``topics`` is in Kafka exactly once, each key in key_seq order, the
    table says published at the partition/offset where Kafka has it, and no transaction hangs."""
    topics = list(topics)
    with psycopg.connect(dsn(url)) as c:
        rows = c.execute(
            "SELECT event_id::text, topic, key, key_seq, published_at IS NOT NULL, kafka_partition, kafka_offset "
            f"FROM {schema}.event WHERE topic = ANY(%s) AND dead_at IS NULL", (topics,)).fetchall()  # type: ignore[arg-type]
    expected = {r[0]: r for r in rows}
    records = consume_all(bootstrap, topics, timeout=timeout, settle_s=settle_s)
    v = Verdict(events=len(expected), seen=len(records))
    ids = [(r.header("outbox-event-id") or b"").decode() for r in records]
    counts = Counter(ids)
    v.duplicates = sorted(e for e, n in counts.items() if n > 1)
    # Lost: marked published (or, at the end of a run, any row) but not in Kafka. Phantom: in Kafka, not a row.
    must_be_there = {e for e, r in expected.items() if r[4] or expect_all_published}
    v.lost = sorted(must_be_there - set(counts))
    v.lost += sorted(f"phantom:{e}" for e in set(counts) - set(expected))
    # In Kafka but the table still says pending: recovery failed to mark a committed batch.
    v.unmarked = sorted(e for e in counts if e in expected and not expected[e][4])
    last: dict[tuple[str, bytes], int] = {}
    by_part: dict[tuple[str, int], list[tuple[int, str, int | None]]] = defaultdict(list)
    for r, eid in zip(records, ids, strict=True):
        seq = r.header("outbox-key-seq")
        by_part[(r.topic, r.partition)].append((r.offset, eid, int(seq) if seq else None))
        row = expected.get(eid)
        if row is not None and row[4] and (row[5], row[6]) != (r.partition, r.offset):
            v.wrong_offsets += 1
    for (t, _p), recs in by_part.items():
        for _off, eid, seq in sorted(recs):
            row = expected.get(eid)
            if row is None or row[2] is None or seq is None:
                continue
            k = (t, bytes(row[2]))
            if seq != last.get(k, 0) + 1:
                v.order_violations.append(f"{t}/{bytes(row[2])!r}: seq {seq} after {last.get(k, 0)}")
            last[k] = max(last.get(k, 0), seq)
    if expect_all_published:
        v.unpublished = sum(1 for r in rows if not r[4])
    if check_hanging:
        v.hanging = find_hanging(bootstrap, [1])
    return v


# The relay with the fault suite's hooks (kill points, the broken protocol), read from FAULTY_RELAY_* variables.
FAULTY_RELAY = "chaos.faulty_relay"


class RelayProcess:
    """``python -m relay`` (or ``module``: :data:`FAULTY_RELAY`) as a real child process (own session, so signals
    reach only it)."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "relay", *, module: str = "relay",
                 **overrides: str) -> None:
        self.name = name
        self.module = module
        self.port = free_port()
        self.env = {**os.environ, **env, "OUTBOX_RELAY_INSTANCE_ID": name,
                    "OUTBOX_RELAY_HTTP_PORT": str(self.port), "OUTBOX_RELAY_HTTP_HOST": "127.0.0.1", **overrides}
        self.log = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO_ROOT, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        finally:
            out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGKILL)
            self.wait(30)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def logs(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def get(self, path: str) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0
