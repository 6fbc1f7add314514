"""kafka-outbox: write events in your business transaction; the relay publishes them exactly once."""

__all__: list[str] = []
