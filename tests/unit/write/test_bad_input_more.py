"""More bad input refused at write time with a typed error (API review findings): times the relay could not read
back, trailing newlines, oversized or unencodable CloudEvents attributes, deep or unencodable data, shard_for's
arguments, and a database that cannot be reached on first use. No database: nothing here runs SQL."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

import outbox
from outbox import errors
from outbox.config import Settings
from outbox.event import TIME_MAX, TIME_MIN, Event
from outbox.registry import JsonSchemaRegistry
from outbox.store.roles import roles_sql
from outbox.validation import prepare_one, record_size
from relay.cli.ops_args import check_schema

S = Settings(source="urn:t")


def ev(**kw: Any) -> Event:
    base: dict[str, Any] = {"topic": "orders", "type": "order.created", "data": {"a": 1}, "source": "urn:t"}
    base.update(kw)
    return Event(**base)


class RaisingTZ(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset here")

    def dst(self, dt: datetime | None) -> None:
        return None


class DayLongTZ(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=30)

    def dst(self, dt: datetime | None) -> None:
        return None


class TextTZ(tzinfo):
    def utcoffset(self, dt: datetime | None) -> Any:
        return "+01:00"

    def dst(self, dt: datetime | None) -> None:
        return None


PLUS5, MINUS5 = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))

BAD: list[tuple[str, dict[str, Any], type[errors.OutboxError], str]] = [
    # year 10000 / 1 BC in UTC: Postgres stores it, no Python client reads it back (every claim of the shard failed)
    ("time after 9999 in UTC", {"time": datetime(9999, 12, 31, 23, tzinfo=MINUS5)}, errors.AttributeValueError,
     r"outside 0001-01-02T00:00:00\+00:00 \.\. 9999-12-30T23:59:59\.999999\+00:00"),
    ("time before 1 in UTC", {"time": datetime(1, 1, 1, tzinfo=PLUS5)}, errors.AttributeValueError,
     r"outside 0001-01-02T00:00:00\+00:00"),
    # Python reads these back in UTC, but not in every session time zone: outside TIME_MIN..TIME_MAX
    ("time on 0001-01-01 UTC", {"time": datetime(1, 1, 1, 12, tzinfo=UTC)}, errors.AttributeValueError,
     r"outside 0001-01-02"),
    ("time on 9999-12-31 UTC", {"time": datetime(9999, 12, 31, tzinfo=UTC)}, errors.AttributeValueError,
     r"outside 0001-01-02"),
    ("tz utcoffset raises", {"time": datetime(2024, 1, 1, tzinfo=RaisingTZ())}, errors.AttributeValueError,
     "no usable UTC offset"),
    ("tz offset of 30h", {"time": datetime(2024, 1, 1, tzinfo=DayLongTZ())}, errors.AttributeValueError,
     "no usable UTC offset"),
    ("tz offset not a timedelta", {"time": datetime(2024, 1, 1, tzinfo=TextTZ())}, errors.AttributeValueError,
     "no usable UTC offset"),
    # `$` with .match let a trailing newline through
    ("topic trailing newline", {"topic": "orders\n"}, errors.TopicError, "characters Kafka rejects"),
    # lone surrogates: a raw UnicodeEncodeError before
    ("type surrogate", {"type": "a\udc80"}, errors.AttributeValueError, "type .* not valid Unicode"),
    ("source surrogate", {"source": "s\ud800"}, errors.AttributeValueError, "source .* not valid Unicode"),
    ("subject surrogate", {"subject": "s\ud800"}, errors.AttributeValueError, "subject .* not valid Unicode"),
    ("content_type surrogate", {"content_type": "application/x\udc80+json"}, errors.AttributeValueError,
     "content_type .* not valid Unicode"),
    ("header name surrogate", {"headers": {"a\udc80": "v"}}, errors.HeaderError, "header name .* not valid Unicode"),
    ("header value surrogate", {"headers": {"a": "v\udc80"}}, errors.HeaderError,
     "header 'a': the value is not valid Unicode"),
]


@pytest.mark.parametrize(("case", "kw", "exc", "match"), BAD, ids=[c[0] for c in BAD])
def test_bad_attribute_is_refused_when_built(case: str, kw: dict[str, Any], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        ev(**kw)


@pytest.mark.parametrize("t", [
    TIME_MIN, TIME_MAX, TIME_MIN.astimezone(MINUS5), TIME_MAX.astimezone(PLUS5),
    datetime(1, 1, 2, 5, tzinfo=PLUS5),  # 0001-01-02T00:00Z exactly
])
def test_times_inside_the_span_pass(t: datetime) -> None:
    prepare_one(ev(time=t), S)


def test_non_ascii_attributes_and_headers_pass() -> None:
    p = prepare_one(ev(type="commandé", subject="日本", headers={"clé": "valeur é"}), S)
    assert p.headers == [{"name": "clé", "value": "valeur é"}]


@pytest.mark.parametrize("field", ["type", "source", "subject", "content_type"])
def test_attributes_count_towards_the_max(field: str) -> None:
    value = "a/" + "x" * 2_000_000 + "+json" if field == "content_type" else "x" * 2_000_000
    with pytest.raises(errors.PayloadError, match=f"over the maximum.*the largest part is {field}: shorten {field}"):
        prepare_one(ev(**{field: value}), S)


def test_the_size_limit_is_exact_with_attributes_and_envelope() -> None:
    small = Settings(source="urn:t", max_payload_bytes=2048)
    # the attributes travel as headers: the type's "é" is 2 bytes in UTF-8, and the record is counted as Kafka does
    room = 1
    while record_size(ev(data={}, type="é" + "t" * (room + 1)), b"{}", None) <= 2048:
        room += 1
    prepare_one(ev(data={}, type="é" + "t" * room), small)  # 2048 bytes exactly
    with pytest.raises(errors.PayloadError, match=r"record of 2049 bytes \(payload 2, type \d+, source 5"):
        prepare_one(ev(data={}, type="é" + "t" * (room + 1)), small)


def _nested(depth: int, leaf: Any = None) -> Any:
    d: Any = [] if leaf is None else [leaf]
    for _ in range(depth):
        d = [d]
    return d


@pytest.mark.parametrize("depth", [3_000, 100_000])
def test_deep_data_is_a_payload_error(depth: int) -> None:
    with pytest.raises(errors.PayloadError, match="nested too deeply"):
        prepare_one(ev(data=_nested(depth)), S)


def test_deep_data_under_a_json_schema_is_a_payload_error() -> None:
    s = Settings(source="urn:t", registry=JsonSchemaRegistry({"order.created": {"items": {"$ref": "#"}}}))
    with pytest.raises(errors.PayloadError, match="nested too deeply to check against the JSON Schema"):
        prepare_one(ev(data=_nested(600)), s)


def test_a_nul_deep_in_the_data_is_located() -> None:
    with pytest.raises(errors.PayloadError, match=r"NUL character .* at \$(\[0\]){800}\[0\]; "):
        prepare_one(ev(data=_nested(800, "a\x00")), S)


@pytest.mark.parametrize(("data", "match"), [
    ({"n": 10 ** 5000}, r"an integer at \$\.n with more digits than Python converts"),
    ({10 ** 5000: 1}, r"an integer at \$ \(key <an integer of 16610 bits>\) with more digits"),
    ({float("nan"): 1}, r"NaN or Infinity at \$ \(key nan\)"),
    ({"a": [1, {float("-inf"): 2}]}, r"NaN or Infinity at \$\.a\[1\] \(key -inf\)"),
])
def test_unencodable_numbers_are_named_where_they_are(data: Any, match: str) -> None:
    assert sys.get_int_max_str_digits() in range(1, 5000)  # the limit that makes 10**5000 unencodable
    with pytest.raises(errors.PayloadError, match=match) as info:
        prepare_one(ev(data=data), S)
    assert "at None" not in str(info.value)


EID = uuid.UUID("01890000-0000-7000-8000-000000000000")


@pytest.mark.parametrize(("args", "exc", "match"), [
    (("t", b"k", EID, 0), errors.ConfigError, "shards must be a positive int"),
    (("t", b"k", EID, -3), errors.ConfigError, "shards must be a positive int"),
    (("t", None, EID, 0), errors.ConfigError, "shards must be a positive int"),
    (("t", b"k", EID, True), errors.ConfigError, "shards must be a positive int"),
    (("t", b"k", EID, 8.0), errors.ConfigError, "shards must be a positive int"),
    (("t", None, str(EID), 8), errors.AttributeValueError, "event_id must be a uuid.UUID"),
    (("t", 42, EID, 8), errors.KeyError_, "key must be str, bytes or None"),
    (("t", "\udc80", EID, 8), errors.KeyError_, "cannot be UTF-8 encoded"),
    ((None, b"k", EID, 8), errors.TopicError, "topic must be a str"),
])
def test_shard_for_checks_its_arguments(args: tuple[Any, ...], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        outbox.shard_for(*args)


def test_shard_for_takes_a_str_key_as_event_does() -> None:
    assert outbox.shard_for("t", "order-1", EID, 8) == outbox.shard_for("t", b"order-1", EID, 8)
    assert outbox.shard_for("t", "ключ", EID, 8) == prepare_one(ev(key="ключ", id=EID), S).shard


def test_schema_names_with_a_trailing_newline_are_refused() -> None:
    with pytest.raises(errors.ConfigError, match="plain SQL identifier"):
        check_schema("outbox\n")
    with pytest.raises(ValueError, match="plain SQL identifier"):
        roles_sql("outbox\n")
    with pytest.raises(ValueError, match="plain SQL identifier"):
        roles_sql("outbox", prefix="app\n")


UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/nothing"  # port 1: refused at once, no timeout


def test_unreachable_database_on_first_use_is_database_unavailable() -> None:
    engine = sa.create_engine(UNREACHABLE, connect_args={"connect_timeout": 5})
    try:
        with Session(engine) as s, s.begin(), pytest.raises(errors.DatabaseUnavailableError, match="connecting"):
            outbox.enqueue(s, ev())
    finally:
        engine.dispose()


def test_unreachable_database_on_first_use_async() -> None:
    async def run() -> None:
        engine = create_async_engine(UNREACHABLE, connect_args={"connect_timeout": 5})
        try:
            async with AsyncSession(engine) as s, s.begin():
                with pytest.raises(errors.DatabaseUnavailableError, match="connecting"):
                    await outbox.enqueue(s, ev())
        finally:
            await engine.dispose()

    asyncio.run(run())


def test_exhausted_pool_is_database_unavailable(tmp_path: Path) -> None:
    # sqlite stands in for the database: the pool times out before any SQL would run
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db'}", poolclass=QueuePool, pool_size=1, max_overflow=0,
                              pool_timeout=0)
    try:
        with (engine.connect(), Session(engine) as s, s.begin(),
              pytest.raises(errors.DatabaseUnavailableError, match="no database connection became free")):
            outbox.enqueue(s, ev())
    finally:
        engine.dispose()

