"""Relay processes for the write-side tests that prove a record enqueue accepted is one Kafka accepts."""

from tests.integration.relay.conftest import relay_env, relays

__all__ = ["relay_env", "relays"]
