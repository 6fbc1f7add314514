"""relay.tracing: one PRODUCER span per batch, linked to each event's writer trace; errors recorded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from outbox.write import current_traceparent
from relay import tracing


@dataclass(frozen=True)
class Row:
    topic: str
    traceparent: str | None


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return provider, exp


def test_publish_span_links_every_writer_trace(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exp = spans
    tracer = provider.get_tracer("test")
    # The writer side: enqueue captures the active span as the row's traceparent.
    with tracer.start_as_current_span("POST /orders") as writer:
        tp = current_traceparent()
    assert tp is not None
    rows = [Row("orders", tp), Row("orders", None), Row("orders", "garbage")]
    with tracing.publish_span(rows, shard=3, epoch=7, tracer=tracer):
        pass
    (span,) = exp.get_finished_spans()[-1:]
    assert span.name == tracing.SPAN_NAME and span.kind is SpanKind.PRODUCER
    assert [link.context.trace_id for link in span.links] == [writer.get_span_context().trace_id]
    assert span.links[0].context.span_id == writer.get_span_context().span_id
    attrs = dict(span.attributes or {})
    assert attrs["messaging.system"] == "kafka" and attrs["messaging.destination.name"] == "orders"
    assert attrs["messaging.batch.message_count"] == 3 and attrs["outbox.traced_events"] == 1
    assert attrs["outbox.shard"] == 3 and attrs["outbox.epoch"] == 7


def test_links_are_capped_and_the_rest_counted(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exp = spans
    rows = [Row(f"t{i % 2}", f"00-{i + 1:032x}-{i + 1:016x}-01") for i in range(10)]
    with tracing.publish_span(rows, shard=0, tracer=provider.get_tracer("t"), max_links=4):
        pass
    (span,) = exp.get_finished_spans()
    assert len(span.links) == 4 and dict(span.attributes or {})["outbox.links_dropped"] == 6
    assert "messaging.destination.name" not in dict(span.attributes or {}), "two topics: no single destination"


def test_a_failed_publish_is_recorded_on_the_span(spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exp = spans
    with pytest.raises(RuntimeError), tracing.publish_span([Row("t", None)], shard=1,
                                                           tracer=provider.get_tracer("t")):
        raise RuntimeError("broker went away")
    (span,) = exp.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in span.events)


@pytest.mark.parametrize("value", [None, "", "00-0-0-01", "ff-" + "1" * 32 + "-" + "1" * 16 + "-01",
                                   "00-" + "0" * 32 + "-" + "1" * 16 + "-01", b"\xff\xfe"])
def test_bad_traceparents_are_ignored(value: str | bytes | None) -> None:
    assert tracing.parse_traceparent(value) is None


def test_without_an_sdk_spans_are_noops() -> None:
    with tracing.publish_span([Row("t", "00-" + "a" * 32 + "-" + "b" * 16 + "-01")], shard=0) as span:
        assert not span.is_recording() or span.get_span_context().is_valid
