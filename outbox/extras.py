"""Optional dependencies: what the core install leaves out, which extra brings it, and the error naming it.

The core install (``pip install kafka-outbox``) is what writers need: SQLAlchemy (with greenlet, for
``AsyncSession``), psycopg, Alembic and uuid-utils. ``import outbox``, :func:`outbox.enqueue` and
:class:`outbox.OutboxMixin` import nothing else. Every other feature names its extra when its dependency is
missing, instead of failing later with a bare ``ModuleNotFoundError``:

============ ==========================================================================================
extra        for
============ ==========================================================================================
relay        operators: the ``outbox`` command and the relay daemon (Kafka, metrics, settings, tracing)
inbox        consumers: :mod:`outbox.inbox` (Kafka consumer, retries)
audit        auditors: ``outbox reconcile | verify | trace`` (the command line, reading Kafka)
jsonschema   writers validating event data: :class:`outbox.JsonSchemaRegistry`
otel         writers: the active OpenTelemetry span's ``traceparent`` stored with each event (without it,
             none is; an application that uses OpenTelemetry has the API installed already)
binary       psycopg's prebuilt C implementation (``psycopg[binary]``), for hosts without libpq
============ ==========================================================================================

pyproject.toml declares them; ``tests/unit/test_packaging.py`` keeps :data:`OPTIONAL_MODULES` in step with it.
"""

from __future__ import annotations

DISTRIBUTION = "kafka-outbox"

OPTIONAL_MODULES = frozenset({
    "confluent_kafka", "typer", "rich", "pydantic", "pydantic_settings", "prometheus_client", "tenacity",
    "opentelemetry", "jsonschema", "referencing", "jsonschema_specifications",
})
"""The top-level import names that only an extra installs."""


def install_hint(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def is_optional(exc: ModuleNotFoundError) -> bool:
    """Whether ``exc`` is about a module that an extra installs (and not, say, a typo in our own imports)."""
    return (exc.name or "").split(".")[0] in OPTIONAL_MODULES


def missing_extra(exc: ModuleNotFoundError, feature: str, extra: str) -> ModuleNotFoundError:
    """The error to raise ``from exc`` when ``feature`` cannot import a module of ``extra``.

    Still a ``ModuleNotFoundError`` (with the same ``name``), so code catching that keeps working; the message
    says what to install.
    """
    return ModuleNotFoundError(
        f"{feature} needs the module {exc.name!r}, which the [{extra}] extra installs: {install_hint(extra)}",
        name=exc.name,
    )
