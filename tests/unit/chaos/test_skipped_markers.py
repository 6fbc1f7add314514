"""Kafka's skipped transaction markers, read from the brokers' logs: only skips never followed by a re-send."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stack.kafka import KafkaCluster, KafkaNode
from stack.verify import skipped_markers

SEND = ("[2026-12-07 04:34:{s},100] INFO [Transaction State Manager 1]: Sending txn markers for "
        "TransactionalIdCoordinatorEpochAndTransitMetadata({tid},{ce},{outcome},TransactionMetadata(transactionalId="
        "{tid}, producerId=4, prevProducerId=4, nextProducerId=-1, producerEpoch={epoch}, lastProducerEpoch=-1)")
SKIP = ("[2026-12-07 04:34:{s},200] INFO [Transaction Marker Channel Manager 1]: Couldn't find leader endpoint for "
        "partitions HashSet(chaos-payments-4, outbox-relay-checkpoints-4) while trying to send transaction markers "
        "for {tid}, these partitions are likely deleted already and hence can be skipped (kafka.coordinator)")


@dataclass
class _Cluster:
    nodes: list[KafkaNode] = field(default_factory=list)


def _cluster(tmp_path: Path, *logs: list[str]) -> KafkaCluster:
    nodes = []
    for i, lines in enumerate(logs, 1):
        node = KafkaNode(i, 1, 2, tmp_path / f"node{i}")
        node.log_dir.mkdir(parents=True)
        (node.log_dir / "server.log").write_text("\n".join(lines) + "\n")
        nodes.append(node)
    return _Cluster(nodes)  # type: ignore[return-value]


def test_a_skip_that_is_never_sent_again_is_reported_with_its_outcome(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, [SEND.format(s=50, tid="r-4", ce=0, outcome="ABORT", epoch=23),
                                  SKIP.format(s=50, tid="r-4")])
    assert skipped_markers(cluster) == [
        "2026-12-07 04:34:50,200 r-4 ABORT epoch 23 not written to chaos-payments-4, outbox-relay-checkpoints-4"]


def test_a_skip_whose_transaction_is_sent_again_later_is_not(tmp_path: Path) -> None:
    # The coordinator could not record the completion, lost the partition, and its successor re-sent the
    # markers of the same transaction (same producer epoch), on another broker.
    cluster = _cluster(tmp_path,
                       [SEND.format(s=50, tid="r-4", ce=0, outcome="COMMIT", epoch=23), SKIP.format(s=50, tid="r-4")],
                       [SEND.format(s=52, tid="r-4", ce=2, outcome="COMMIT", epoch=23)])
    assert skipped_markers(cluster) == []
