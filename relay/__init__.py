"""The relay daemon: claims outbox rows and publishes them to Kafka exactly once (see README "Guarantees")."""
