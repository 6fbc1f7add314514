"""Bad input is refused at write time with a typed error that says what to fix, before any SQL runs."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import outbox
from outbox import errors
from outbox.config import Settings
from outbox.event import Event
from outbox.registry import JsonSchemaRegistry
from outbox.validation import prepare, prepare_one, record_size

S = Settings(source="urn:test")


def ev(**kw: Any) -> Event:
    base: dict[str, Any] = {"topic": "orders", "type": "order.created", "data": {"a": 1}, "source": "urn:t"}
    base.update(kw)
    return Event(**base)


BAD_EVENTS: list[tuple[str, dict[str, Any], type[errors.OutboxError], str]] = [
    # topic
    ("topic empty", {"topic": ""}, errors.TopicError, "empty"),
    ("topic dot", {"topic": "."}, errors.TopicError, "not allowed"),
    ("topic dotdot", {"topic": ".."}, errors.TopicError, "not allowed"),
    ("topic space", {"topic": "my orders"}, errors.TopicError, "characters Kafka rejects"),
    ("topic slash", {"topic": "a/b"}, errors.TopicError, r"\[a-zA-Z0-9._-\]"),
    ("topic unicode", {"topic": "commandé"}, errors.TopicError, "characters"),
    ("topic too long", {"topic": "x" * 250}, errors.TopicError, "at most 249"),
    ("topic not str", {"topic": b"orders"}, errors.TopicError, "must be a str"),
    # CloudEvents attributes
    ("type empty", {"type": ""}, errors.AttributeValueError, "type is empty"),
    ("type blank", {"type": "   "}, errors.AttributeValueError, "type is empty"),
    ("type not str", {"type": 3}, errors.AttributeValueError, "type must be a str"),
    ("type NUL", {"type": "a\x00b"}, errors.AttributeValueError, "NUL"),
    ("source empty", {"source": ""}, errors.AttributeValueError, "source is empty"),
    ("subject empty", {"subject": ""}, errors.AttributeValueError, "subject is empty"),
    ("subject not str", {"subject": 7}, errors.AttributeValueError, "subject must be a str"),
    ("id str", {"id": str(uuid.uuid4())}, errors.AttributeValueError, "uuid.UUID"),
    ("id int", {"id": 42}, errors.AttributeValueError, "uuid.UUID"),
    ("time naive", {"time": datetime(2024, 1, 1)}, errors.AttributeValueError, "naive"),
    ("time str", {"time": "2024-01-01T00:00:00Z"}, errors.AttributeValueError, "must be a datetime"),
    ("content_type empty", {"content_type": ""}, errors.AttributeValueError, "content_type is empty"),
    # key
    ("key int", {"key": 42}, errors.KeyError_, "str, bytes or None"),
    ("key uuid", {"key": uuid.uuid4()}, errors.KeyError_, "str, bytes or None"),
    ("key bytearray", {"key": bytearray(b"k")}, errors.KeyError_, "str, bytes or None"),
    ("key surrogate", {"key": "\udcff"}, errors.KeyError_, "UTF-8"),
    # headers
    ("headers str", {"headers": "a=b"}, errors.HeaderError, "mapping or a sequence"),
    ("header not pair", {"headers": [("a", "b", "c")]}, errors.HeaderError, r"\(name, value\) pair"),
    ("header name int", {"headers": [(1, "v")]}, errors.HeaderError, "non-empty str"),
    ("header name empty", {"headers": {"": "v"}}, errors.HeaderError, "non-empty str"),
    ("header value int", {"headers": {"n": 1}}, errors.HeaderError, "str or bytes"),
    ("header value None", {"headers": {"n": None}}, errors.HeaderError, "str or bytes"),
    ("header value NUL str", {"headers": {"n": "a\x00"}}, errors.HeaderError, "pass bytes"),
    ("header reserved ce_", {"headers": {"ce_id": "x"}}, errors.HeaderError, "reserved"),
    ("header reserved outbox-", {"headers": {"outbox-key-seq": "1"}}, errors.HeaderError, "reserved"),
    ("header reserved content-type", {"headers": {"Content-Type": "x"}}, errors.HeaderError, "reserved"),
    ("header reserved traceparent", {"headers": [("traceparent", "x")]}, errors.HeaderError, "reserved"),
    # content type / data kind
    ("bytes with json type", {"data": b"{}", "content_type": "application/json"}, errors.PayloadError,
     "decoded object"),
    ("bytes with +json type", {"data": b"{}", "content_type": "application/cloudevents+json"},
     errors.PayloadError, "decoded object"),
    ("object with text type", {"data": {"a": 1}, "content_type": "text/plain"}, errors.PayloadError,
     "needs bytes data"),
]


@pytest.mark.parametrize(("case", "kw", "exc", "match"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_bad_event_is_refused_when_built(case: str, kw: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ev(**kw)


class Weird:
    pass


BAD_DATA: list[tuple[str, Any, str]] = [
    ("datetime", {"at": datetime.now(UTC)}, "not JSON-serialisable"),
    ("decimal", {"amount": Decimal("1.10")}, "not JSON-serialisable"),
    ("set", {"tags": {"a"}}, "not JSON-serialisable"),
    ("object", [Weird()], "not JSON-serialisable"),
    ("tuple dict key", {(1, 2): "x"}, "not JSON-serialisable"),
    ("nan", {"x": [1.0, math.nan]}, r"NaN or Infinity at \$\.x\[1\]"),
    ("inf", {"x": math.inf}, "NaN or Infinity"),
    ("-inf top level", -math.inf, "NaN or Infinity"),
    ("NUL in value", {"note": "a\x00b"}, r"NUL character .* at \$\.note"),
    ("NUL in nested list", {"l": [{"s": "\x00"}]}, r"\$\.l\[0\]\.s"),
    ("NUL in dict key", {"k\x00": 1}, "NUL character"),
    ("NUL top level", "\x00", "NUL character"),
    ("lone surrogate", {"s": "\ud800"}, "not valid Unicode"),
]


@pytest.mark.parametrize(("case", "data", "match"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_refused_before_sql(case: str, data: Any, match: str) -> None:
    with pytest.raises(errors.PayloadError, match=match):
        prepare_one(ev(data=data), S)


def test_circular_data() -> None:
    d: dict[str, Any] = {}
    d["self"] = d
    with pytest.raises(errors.PayloadError, match="circular"):
        prepare_one(ev(data=d), S)


def test_escaped_backslash_u0000_text_is_not_a_nul() -> None:
    p = prepare_one(ev(data={"s": "\\u0000"}), S)
    assert p.payload == b'{"s":"\\\\u0000"}'


def test_payload_over_max() -> None:
    small = Settings(source="urn:t", max_payload_bytes=2048)
    # the record also carries type, source, content_type and the relay's envelope headers, all framed
    n = 1
    while record_size(ev(data="x" * (n + 1)), b'"' + b"x" * (n + 1) + b'"', None) <= 2048:
        n += 1
    prepare_one(ev(data="x" * n), small)  # exactly 2048 in all
    with pytest.raises(errors.PayloadError, match=r"over the maximum of 2048 \(OUTBOX_MAX_PAYLOAD_BYTES"):
        prepare_one(ev(data="x" * (n + 1)), small)


def test_default_max_is_one_mib() -> None:
    assert S.max_payload_bytes == 1_048_576
    with pytest.raises(errors.PayloadError, match="over the maximum"):
        prepare_one(ev(data=b"x" * 1_048_577, content_type="application/octet-stream"), S)


def test_headers_and_key_count_towards_the_max() -> None:
    small = Settings(source="urn:t", max_payload_bytes=1024)
    with pytest.raises(errors.PayloadError, match="headers"):
        prepare_one(ev(data=b"x" * 500, content_type="x/y", headers={"h": b"y" * 600}), small)


def test_key_too_long() -> None:
    with pytest.raises(errors.KeyError_, match="OUTBOX_MAX_KEY_BYTES"):
        prepare_one(ev(key="k" * 1025), S)
    prepare_one(ev(key="k" * 1024), S)


def test_not_an_event() -> None:
    with pytest.raises(errors.EventValidationError, match=r"outbox\.Event"):
        prepare([{"topic": "x"}], S)  # type: ignore[list-item]


def test_duplicate_ids_in_one_call() -> None:
    e = ev()
    with pytest.raises(errors.AttributeValueError, match="share an id"):
        prepare([e, e], S)


@pytest.fixture
def registry() -> Iterator[JsonSchemaRegistry]:
    yield JsonSchemaRegistry({
        "order.created": {
            "type": "object",
            "required": ["total"],
            "properties": {"total": {"type": "number", "minimum": 0}},
        }
    })


def test_registry_rejects_missing_field(registry: JsonSchemaRegistry) -> None:
    s = Settings(source="urn:t", registry=registry)
    with pytest.raises(errors.SchemaValidationError, match=r"'order.created' fails its JSON Schema at \(root\)"):
        prepare_one(ev(data={}), s)


def test_registry_rejects_wrong_type_with_path(registry: JsonSchemaRegistry) -> None:
    s = Settings(source="urn:t", registry=registry)
    with pytest.raises(errors.SchemaValidationError, match="at total"):
        prepare_one(ev(data={"total": -1}), s)
    prepare_one(ev(data={"total": 3}), s)
    prepare_one(ev(type="other", data={}), s)


def test_strict_registry_rejects_unknown_type() -> None:
    s = Settings(source="urn:t", registry=JsonSchemaRegistry({}, strict=True))
    with pytest.raises(errors.SchemaValidationError, match="no JSON Schema is registered"):
        prepare_one(ev(), s)


def test_invalid_schema_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="'t' is invalid"):
        JsonSchemaRegistry({"t": {"type": "nonsense"}})


def test_all_errors_are_outbox_errors_and_value_errors() -> None:
    for _case, kw, exc, _m in BAD_EVENTS:
        assert issubclass(exc, errors.OutboxError) and issubclass(exc, ValueError), kw
    assert outbox.errors is errors
