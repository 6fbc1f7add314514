"""Independent checks of what Kafka holds, for tests, the demo, the benchmarks and the fault suite.

These read Kafka directly (a read_committed confluent-kafka consumer, or Kafka's own Java tools) and never use
the relay's code, so they can contradict it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from stack.kafka import KafkaCluster, kafka_tool
from stack.process import StackError


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


def _b(v: str | bytes | None) -> bytes | None:
    return v.encode() if isinstance(v, str) else v


def _liveness(cluster: KafkaCluster | None) -> str:
    if cluster is None:
        return ""
    dead = [n.node_id for n in cluster.nodes if not n.running()]
    return f"; Kafka nodes not running: {dead}" if dead else "; all Kafka nodes are running"


def consume_all(bootstrap: str, topics: list[str], timeout: float = 60, isolation: str = "read_committed",
                *, cluster: KafkaCluster | None = None, settle_s: float = 0.0) -> list[Record]:
    """Read every record of ``topics`` from the beginning up to the current end (the LSO under read_committed).

    ``settle_s``: first wait up to that long for each partition's LSO to reach its high watermark. A producer's
    commit returns once the coordinator has logged it, and the partitions' commit markers follow a moment later:
    without the wait, a check run right after a relay stops can miss its last batch. Pass 0 where a transaction
    is meant to be open. Raises StackError naming the unfinished partitions if reading takes over ``timeout``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    deadline = time.monotonic() + timeout
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex[:8]}",
        "isolation.level": isolation, "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "enable.partition.eof": False, "log_level": 3,
    })
    try:
        ends: dict[tuple[str, int], int] = {}
        try:
            md = c.list_topics(timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except KafkaException as exc:
            raise StackError(f"could not read metadata from {bootstrap}: {exc}{_liveness(cluster)}") from exc
        tps = []
        for t in topics:
            if t not in md.topics or md.topics[t].error is not None:
                raise StackError(f"topic {t!r} does not exist on {bootstrap}{_liveness(cluster)}")
            for p in md.topics[t].partitions:
                tp = TopicPartition(t, p, OFFSET_BEGINNING)
                tps.append(tp)
                # under read_committed the high mark reported here is the last stable offset
                ends[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=10, cached=False)[1]
        if settle_s > 0 and isolation == "read_committed":
            ends = _settled(bootstrap, c, ends, min(settle_s, max(0.0, deadline - time.monotonic())))
        if bad := {k: v for k, v in ends.items() if v < 0}:  # e.g. -1001 while a leader is gone: never "empty"
            raise StackError(f"no valid end offset for {sorted(bad)}: {bad}{_liveness(cluster)}")
        ends = {k: v for k, v in ends.items() if v > 0}
        c.assign(tps)
        out: list[Record] = []
        pos: dict[tuple[str, int], int] = {}
        while any(pos.get(k, -1) + 1 < v for k, v in ends.items()):
            if time.monotonic() > deadline:
                left = {f"{t}[{p}]": f"{pos.get((t, p), -1) + 1}/{e}" for (t, p), e in ends.items()
                        if pos.get((t, p), -1) + 1 < e}
                raise StackError(f"timed out after {timeout:.0f}s reading {topics}: unfinished {left}"
                                 f"{_liveness(cluster)}")
            for m in c.consume(500, timeout=0.5):
                if m.error() is not None:
                    continue
                t, p, o = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                pos[(t, p)] = o
                hs = tuple((h[0], h[1] if isinstance(h[1], bytes) else (h[1] or "").encode())
                           for h in (m.headers() or []))
                out.append(Record(t, p, o, _b(m.key()), _b(m.value()), hs))
            # control records (commit/abort markers) occupy offsets too: ask where the consumer stands
            for tp in c.position(c.assignment()):
                k = (tp.topic, tp.partition)
                if tp.offset > 0:
                    pos[k] = max(pos.get(k, -1), tp.offset - 1)
        return out
    finally:
        c.close()


def _settled(bootstrap: str, committed: Any, lso: dict[tuple[str, int], int],
             within: float) -> dict[tuple[str, int], int]:
    """Poll the read_committed ends until each reaches the high watermark seen now, or ``within`` runs out (a
    hanging transaction is find_hanging's to report); returns the ends to read up to."""
    from confluent_kafka import Consumer, TopicPartition

    raw = Consumer({"bootstrap.servers": bootstrap, "group.id": f"verify-{uuid.uuid4().hex[:8]}",
                    "isolation.level": "read_uncommitted", "log_level": 3})
    try:
        hw = {k: raw.get_watermark_offsets(TopicPartition(*k), timeout=10, cached=False)[1] for k in lso}
    finally:
        raw.close()
    deadline = time.monotonic() + within
    ends = dict(lso)
    while True:
        behind = [k for k in ends if ends[k] < hw[k]]
        if not behind or time.monotonic() > deadline:
            return ends
        time.sleep(0.05)
        for k in behind:
            ends[k] = committed.get_watermark_offsets(TopicPartition(*k), timeout=10, cached=False)[1]


def console_consume(bootstrap: str, topic: str, expected: int, timeout_ms: int = 20000) -> list[str]:
    """Kafka's own ConsoleConsumer, read_committed, from the beginning: returns ``key\\tvalue`` lines."""
    res = kafka_tool(
        "org.apache.kafka.tools.consumer.ConsoleConsumer", "--bootstrap-server", bootstrap, "--topic", topic,
        "--from-beginning", "--isolation-level", "read_committed", "--max-messages", str(expected),
        "--timeout-ms", str(timeout_ms), "--formatter-property", "print.key=true",
        "--formatter-property", "print.headers=true", "--formatter-property", "key.separator=\t",
        timeout=timeout_ms / 1000 + 60, heap="512m",
    )
    return [ln for ln in res.stdout.splitlines() if ln.strip()]


def find_hanging(bootstrap: str, broker_ids: list[int]) -> list[str]:
    """Kafka's TransactionsCommand find-hanging for each broker: the hanging transactions' lines (none is good)."""
    hanging: list[str] = []
    for b in broker_ids:
        res = kafka_tool("org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap,
                         "find-hanging", "--broker-id", str(b))
        if res.returncode != 0:
            raise StackError(f"TransactionsCommand find-hanging failed: {res.stderr[-1500:]}")
        lines = [ln for ln in res.stdout.splitlines()[1:] if ln.strip()]
        hanging.extend(lines)
    return hanging


# Kafka's transaction coordinator drops the commit/abort marker of every partition whose leader it cannot find in
# its metadata cache ("likely deleted"), then records the transaction as complete. Right after a whole-cluster
# restart, live partitions can look like that: their records stay undecided, and the next marker of the same
# producer id on that partition decides them, commit or abort, whatever their own transaction's outcome was.
_SKIPPED = re.compile(r"^\[([^\]]+)\].*Couldn't find leader endpoint for partitions (?:Hash)?Set\(([^)]*)\) while "
                      r"trying to send transaction markers for (\S+), these partitions are likely deleted")
_SENDING = re.compile(r"^\[([^\]]+)\].*Sending txn markers for TransactionalIdCoordinatorEpochAndTransitMetadata\("
                      r"([^,]+),\d+,(COMMIT|ABORT),.*?producerEpoch=(\d+)")


def skipped_markers(cluster: KafkaCluster) -> list[str]:
    """Transaction markers that a broker's coordinator skipped for good, from the brokers' server.log:
    ``"<time> <transactional id> <COMMIT|ABORT> epoch <n> not written to <partitions>"``.

    A skip is for good unless the same transaction's markers were sent again later (a coordinator that failed
    to record the completion reloads the transaction and retries). Kafka's own record that it completed a
    transaction without deciding its records on those partitions: the next marker of that producer id there
    decides them instead, so a duplicate or a loss on those partitions is Kafka's."""
    events: list[tuple[str, str, str, str, str]] = []  # (time, kind, transactional id, outcome/partitions, epoch)
    for n in cluster.nodes:
        for path in sorted(n.log_dir.glob("server.log*")):
            for line in path.read_text(errors="replace").splitlines():
                if (m := _SENDING.match(line)) is not None:
                    events.append((m.group(1), "send", m.group(2), m.group(3), m.group(4)))
                elif (m := _SKIPPED.match(line)) is not None:
                    events.append((m.group(1), "skip", m.group(3), m.group(2), ""))
    events.sort()
    last_send: dict[str, tuple[str, str]] = {}  # transactional id -> (outcome, epoch) of its latest send
    pending: dict[tuple[str, str], str] = {}  # (transactional id, epoch) -> description of a skip
    for ts, kind, tid, what, epoch in events:
        if kind == "send":
            pending.pop((tid, epoch), None)  # sent again: that skip was not final
            last_send[tid] = (what, epoch)
        else:
            outcome, ep = last_send.get(tid, ("?", "?"))
            pending[(tid, ep)] = f"{ts} {tid} {outcome} epoch {ep} not written to {what}"
    return sorted(pending.values())


def describe_json(obj: object) -> str:
    return json.dumps(obj, default=str, sort_keys=True)
