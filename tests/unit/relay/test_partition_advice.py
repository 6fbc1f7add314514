"""The relay's one-line advice on a topic's partition count (relay/kafka/transport.py, docs/decisions/016).

Pure logic over a fake metadata answer: which counts get the advice, with how many partitions per shard, and that
it is said once per topic and process, after the commit.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from relay.config import RelaySettings
from relay.kafka import transport


class _FakeProducer:
    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.lookups: list[str] = []

    def commit_transaction(self, timeout: float) -> None:
        pass

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.lookups.append(topic)
        md = SimpleNamespace(partitions=dict.fromkeys(range(self.counts[topic])), error=None)
        return SimpleNamespace(topics={topic: md})


def _transport(monkeypatch: pytest.MonkeyPatch, shards: int, counts: dict[str, int]) -> transport.KafkaTransport:
    monkeypatch.setattr(transport, "_ADVISED", set())
    s = RelaySettings(database_url="postgresql+psycopg://u@127.0.0.1:1/d", bootstrap_servers="127.0.0.1:1",
                      shards=shards, transactional_id_prefix="advice")
    t = transport.KafkaTransport(s, 0)
    t._producer = _FakeProducer(counts)  # type: ignore[assignment]
    return t


def _advice(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "partitions and OUTBOX_SHARDS" in r.getMessage()]


@pytest.mark.parametrize(("partitions", "per_shard"), [(6, 3), (12, 3), (3, 3), (7, 7), (10, 5)])
def test_a_count_that_spreads_a_shard_over_several_partitions_is_named_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, partitions: int, per_shard: int) -> None:
    caplog.set_level(logging.INFO, logger="relay.kafka")
    t = _transport(monkeypatch, 8, {"orders": partitions})
    t._new_topics = ["orders"]  # what send() notes for a topic it has not sent to before
    t.commit()
    t._new_topics = ["orders"]  # another producer of the process, same topic: no second line
    t.commit()
    assert _advice(caplog) == [f"topic 'orders' has {partitions} partitions and OUTBOX_SHARDS=8: each shard's "
                               f"transactions write to {per_shard} of them; with 8 partitions they would write to "
                               f"one (docs/operations.md#partition-counts-and-the-shard-count)"]


@pytest.mark.parametrize("partitions", [8, 16, 4, 2, 1])
def test_multiples_and_divisors_of_the_shard_count_need_no_advice(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, partitions: int) -> None:
    caplog.set_level(logging.INFO, logger="relay.kafka")
    t = _transport(monkeypatch, 8, {"orders": partitions})
    t._new_topics = ["orders"]
    t.commit()
    assert _advice(caplog) == []
    assert t._producer.lookups == ["orders"]  # type: ignore[attr-defined]
