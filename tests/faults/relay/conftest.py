"""The relay fault suite reuses the relay integration fixtures (one real relay process per ``spawn``)."""

from tests.integration.relay.conftest import relay_env, relays  # noqa: F401 - re-exported fixtures
