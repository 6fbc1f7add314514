"""The relay's Prometheus metrics (names documented in docs/relay.md). One registry per Supervisor."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from outbox.version import VERSION

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def build_labels() -> dict[str, str]:
    """The labels of ``outbox_build_info``: what this relay process runs."""
    from relay.kafka.versions import librdkafka_version  # the relay's one confluent_kafka seam

    return {"version": VERSION, "python": platform.python_version(), "librdkafka": librdkafka_version()}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        # outbox_build_info{version, python, librdkafka} 1: which build each relay runs (e.g. during a rollout)
        self.build = Info("outbox_build", "The kafka-outbox version of this relay, and its Python and librdkafka",
                          registry=r)
        self.build.info(build_labels())
        self.published = Counter("outbox_relay_published", "Events published and marked (rate() for events/s)",
                                 ["shard"], registry=r)
        self.batch_seconds = Histogram("outbox_relay_batch_seconds", "Claim to mark of one batch, seconds",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_seconds = Histogram("outbox_relay_commit_seconds", "Kafka commit_transaction, seconds",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.phase_seconds = Histogram("outbox_relay_phase_seconds",
                                       "Time per batch phase: claim (DB read), flush (events acknowledged), "
                                       "commit (checkpoint + commit_transaction), mark (DB update)", ["phase"],
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("outbox_relay_batch_rows", "Rows per published batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 20000), registry=r)
        self.retries = Counter("outbox_relay_retries", "Transient failures retried with backoff", ["kind"],
                               registry=r)
        self.failures = Counter("outbox_relay_permanent_failures", "Rows refused permanently by Kafka (one attempt)",
                                registry=r)
        self.dead_lettered = Counter("outbox_relay_dead_lettered", "Rows moved to the dead-letter table", registry=r)
        self.recovered = Counter("outbox_relay_recovered_rows",
                                 "Rows marked from a checkpoint on shard takeover (committed, not re-sent)", registry=r)
        self.lease_events = Counter("outbox_relay_lease_events", "Lease acquisitions, releases and losses",
                                    ["event"], registry=r)
        self.backlog = Gauge("outbox_relay_backlog", "Pending rows per owned shard", ["shard"], registry=r)
        self.oldest_age = Gauge("outbox_relay_oldest_pending_age_seconds",
                                "Age of the oldest pending row per owned shard", ["shard"], registry=r)
        self.dead_letters_open = Gauge("outbox_relay_dead_letters", "Open (unresolved) dead letters, all shards",
                                       registry=r)
        self.held_keys = Gauge("outbox_relay_held_keys", "(topic, key) pairs held behind an open dead letter",
                               registry=r)
        self.stranded = Gauge("outbox_relay_stranded_rows",
                              "Pending rows in shards >= OUTBOX_SHARDS, which no relay claims (a writer with another "
                              "shard count): alert on > 0", registry=r)
        self.claim_floor = Gauge("outbox_relay_claim_floor",
                                 "Per owned shard: the id at or below which claims no longer look (0: from the "
                                 "bottom). Stuck while a writing transaction stays open (docs/decisions/015)",
                                 ["shard"], registry=r)
        self.leases_held = Gauge("outbox_relay_leases_held", "Shards this instance owns", registry=r)
        self.ready = Gauge("outbox_relay_ready", "1 while ready (/readyz): leases renew, Kafka answers", registry=r)
