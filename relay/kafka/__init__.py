"""The relay's only contact with Kafka: this package is the only ``confluent_kafka`` importer in ``relay/``.

librdkafka errors are translated here, once, into :mod:`outbox.errors`:

* ``FencedError``            a newer producer with our transactional.id exists (we are a zombie), or fatal error
* ``PermanentPublishError``  the broker will never take this record (too large, invalid/unknown topic, denied)
* ``KafkaUnavailableError``  everything else: timeouts, transport, coordinator moves (retry with backoff)
"""

from relay.kafka.checkpoints import KafkaCheckpointLog, open_checkpoint_log
from relay.kafka.checks import Reachability, probe, validate_config
from relay.kafka.clients import client_config, producer_config, translate
from relay.kafka.lanes import LaneTransport, shard_transport
from relay.kafka.transport import KafkaTransport

__all__ = ["KafkaCheckpointLog", "KafkaTransport", "LaneTransport", "Reachability", "client_config",
           "open_checkpoint_log", "probe", "producer_config", "shard_transport", "translate", "validate_config"]
