"""OpenTelemetry spans around publish, linked to each event's writer trace (W3C ``traceparent``).

The writer's trace context travels in the outbox row (``event.traceparent``, captured by ``enqueue``) and on to
Kafka as the ``traceparent`` header, so a consumer continues the *writer's* trace. The relay's own work is a
separate, later operation: one PRODUCER span per Kafka transaction (batch), with a **link** to every event's
writer context, as the OpenTelemetry messaging conventions recommend for batch sends. One span per batch keeps
tracing cost independent of the batch size; links are capped (``max_links``), the rest counted.

Only ``opentelemetry-api`` is used: without an SDK configured these are no-op spans costing next to nothing.
The relay wires it in one line around the transaction (see docs/operations.md)::

    with tracing.publish_span(batch, shard=self.shard, epoch=self.epoch):
        out = publish_batch(...)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

TRACER_NAME = "kafka-outbox.relay"
SPAN_NAME = "outbox publish"
MAX_LINKS = 128  # the SDK's default span link limit
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Traced(Protocol):
    """What the span needs from a row (``outbox.store.relay.PendingRow`` fits)."""

    @property
    def traceparent(self) -> str | None: ...
    @property
    def topic(self) -> str: ...


def parse_traceparent(value: str | bytes | None) -> SpanContext | None:
    """The remote span context of a W3C ``traceparent``, or None when absent or malformed (never raises)."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    m = _TRACEPARENT.fullmatch(text.strip().lower())
    if not m or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m.group(4), 16)))


@contextmanager
def publish_span(rows: Sequence[Traced], *, shard: int, epoch: int | None = None,
                 tracer: trace.Tracer | None = None, max_links: int = MAX_LINKS) -> Iterator[trace.Span]:
    """A PRODUCER span for one Kafka transaction of ``rows``, linked to each row's writer trace.

    Exceptions propagate; the span records them and ends with status ERROR.
    """
    links: list[Link] = []
    traced = 0
    for r in rows:
        ctx = parse_traceparent(r.traceparent)
        if ctx is None:
            continue
        traced += 1
        if len(links) < max_links:
            links.append(Link(ctx))
    topics = sorted({r.topic for r in rows})
    attrs: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.batch.message_count": len(rows),
        "outbox.shard": shard,
        "outbox.traced_events": traced,
        "outbox.links_dropped": traced - len(links),
    }
    if len(topics) == 1:
        attrs["messaging.destination.name"] = topics[0]
    if epoch is not None:
        attrs["outbox.epoch"] = epoch
    t = tracer or trace.get_tracer(TRACER_NAME)
    with t.start_as_current_span(SPAN_NAME, kind=SpanKind.PRODUCER, links=links, attributes=attrs) as span:
        yield span
