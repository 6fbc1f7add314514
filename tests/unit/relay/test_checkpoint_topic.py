"""Creating the checkpoint topic at start: a cluster too slow to answer is an outage (retried), not a crash."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from outbox.errors import KafkaUnavailableError
from relay.config import RelaySettings
from relay.kafka.checkpoints import KafkaCheckpointLog


class _SlowAdmin:
    """Metadata without the topic; a create_topics whose future never completes (seen on a loaded cluster)."""

    class _Md:
        topics: dict[str, Any] = {}

    def list_topics(self, *_: Any, **__: Any) -> Any:
        return self._Md()

    def create_topics(self, topics: list[Any], **_: Any) -> dict[str, Future[None]]:
        return {t.topic: Future() for t in topics}


def test_a_create_topics_answer_that_never_comes_is_an_outage_not_a_crash() -> None:
    s = RelaySettings(database_url="postgresql+psycopg://u@127.0.0.1:1/d", bootstrap_servers="127.0.0.1:1",
                      kafka_timeout_s=0.05)  # type: ignore[call-arg]
    log = KafkaCheckpointLog(s)
    log._admin = _SlowAdmin()  # the one seam to the cluster
    with pytest.raises(KafkaUnavailableError, match=r"creating checkpoint topic .* no answer within"):
        log.ensure(8)
