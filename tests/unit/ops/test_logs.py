"""relay.logs: JSON lines, and secrets never reach them (message, args, extra fields, exception text)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from relay import logs

DB_PW, SASL_PW, KEY_PW, HMAC = "Db-Pa55word!x", "SaslPa55-Y", "KeyPa55-Z", "hmac-3f9a1c7e5b"
DSN = f"postgresql+psycopg://outbox_relay:{DB_PW}@db.internal:5432/outbox?sslmode=verify-full"
SECRETS = (DB_PW, SASL_PW, KEY_PW, HMAC)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    buf = io.StringIO()
    logs.setup("INFO", stream=buf)
    try:
        yield buf
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def _fail(exc: Exception) -> None:
    raise exc


def _clean(text: str) -> None:
    for s in SECRETS:
        assert s not in text, f"secret {s!r} leaked into: {text}"


@pytest.mark.parametrize("text", [
    DSN,
    f"postgres://:{DB_PW}@h/db",
    f"host=db port=5432 user=relay password={DB_PW} sslmode=require",
    f"sasl.password={SASL_PW}",
    f"--kafka-config sasl.password={SASL_PW} --kafka-config ssl.key.password={KEY_PW}",
    json.dumps({"sasl.password": SASL_PW, "ssl.key.password": KEY_PW}),
    str({"sasl.password": SASL_PW, "ssl_key_password": KEY_PW}),
    f'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="u" '
    f'password="{SASL_PW}";',
    f"OUTBOX_REPORT_HMAC_KEY={HMAC}",
    f"report hmac_key: {HMAC}",
    f"OUTBOX_KAFKA_SASL_PASSWORD={SASL_PW}",
])
def test_redact_text_masks_every_spelling(text: str) -> None:
    out = logs.redact_text(text)
    _clean(out)
    assert logs.MASK in out


def test_ordinary_text_is_left_alone() -> None:
    for text in ("password authentication failed for user \"relay\"", "published 2000 rows in 12 ms",
                 "http://broker:9092/path", "token bucket refilled"):
        assert logs.redact_text(text) == text


def test_registered_secrets_are_masked_anywhere() -> None:
    logs.register_secret(HMAC)
    assert logs.redact_text(f"signing with {HMAC}.") == "signing with ***."
    logs.register_secrets({"sasl.password": SASL_PW, "database_url": DSN, "x": "not-secret-value"})
    assert logs.redact_text(f"bare {SASL_PW} and {DB_PW}") == "bare *** and ***"
    assert logs.redact_text("not-secret-value") == "not-secret-value"
    logs.register_secret("ab")  # too short to mask safely: ignored
    assert logs.redact_text("about") == "about"


def test_redact_structured_values() -> None:
    cfg = {"database_url": DSN, "kafka": {"sasl.password": SASL_PW, "ssl.key.password": KEY_PW,
                                          "bootstrap.servers": "b:9093"}, "argv": [f"password={DB_PW}"]}
    out = logs.redact(cfg)
    _clean(json.dumps(out))
    assert out["kafka"]["bootstrap.servers"] == "b:9093" and out["kafka"]["sasl.password"] == "***"


def test_json_lines_never_carry_secrets(captured: io.StringIO) -> None:
    log = logging.getLogger("relay.test")
    log.info("connecting to %s", DSN)
    log.warning("kafka config", extra={"kafka": {"sasl.password": SASL_PW, "security.protocol": "SASL_SSL"},
                                       "hmac_key": HMAC})
    try:
        _fail(ConnectionError(f"could not connect with {DSN} (sasl.password={SASL_PW})"))
    except ConnectionError:
        log.exception("start failed")
    logging.getLogger("third.party").error("ssl.key.password=%s", KEY_PW, stack_info=True)
    lines = [json.loads(ln) for ln in captured.getvalue().splitlines()]
    assert len(lines) == 4
    _clean(captured.getvalue())
    assert lines[0]["msg"] == "connecting to postgresql+psycopg://outbox_relay:***@db.internal:5432/outbox" \
                              "?sslmode=verify-full"
    assert lines[1]["kafka"] == {"sasl.password": "***", "security.protocol": "SASL_SSL"}
    assert lines[1]["hmac_key"] == "***"
    assert "ConnectionError" in lines[2]["exc"] and lines[2]["level"] == "ERROR"
    assert {"ts", "level", "logger", "msg"} <= set(lines[3]) and "stack" in lines[3]


def test_filter_protects_a_plain_text_handler() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(logs.RedactingFilter())
    log = logging.getLogger("relay.plain")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("dsn %s", DSN)
        try:
            _fail(ValueError(f"sasl.password={SASL_PW}"))
        except ValueError:
            log.exception("boom")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    _clean(buf.getvalue())
    assert "ValueError" in buf.getvalue()


def test_log_lines_carry_the_trace_ids_of_the_active_span(captured: io.StringIO) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("work") as span:
        logging.getLogger("relay.t").info("inside")
    doc = json.loads(captured.getvalue().splitlines()[-1])
    assert doc["trace_id"] == format(span.get_span_context().trace_id, "032x")


# --- librdkafka's repeated lines: one per broker and kind per interval, with a count -----------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _refused(broker: str, client: int, after_ms: int) -> str:
    host, _, port = broker.partition(":")
    return (f"FAIL [rdkafka#producer-{client}] [thrd:{broker}/bootstrap]: {broker}/bootstrap: Connect to "
            f"ipv4#{host}:{port} failed: Connection refused (after {after_ms}ms in state CONNECT)")


@pytest.fixture
def client_lines(captured: io.StringIO) -> Iterator[tuple[_Clock, logs.ClientLogLimiter]]:
    """librdkafka's logger with a limiter on a fake clock (as installed by setup, which ``captured`` ran)."""
    client = logging.getLogger(logs.CLIENT_LOGGER)
    installed = logs.client_log_limiter()
    assert installed is not None, "setup installs the limiter"
    clock = _Clock()
    limiter = logs.ClientLogLimiter(interval_s=30.0, clock=clock)
    client.removeFilter(installed)
    client.addFilter(limiter)
    try:
        yield clock, limiter
    finally:
        client.removeFilter(limiter)


def _client_docs(buf: io.StringIO) -> list[dict[str, object]]:
    return [d for d in map(json.loads, buf.getvalue().splitlines()) if d["logger"] == logs.CLIENT_LOGGER]


def test_an_outage_logs_one_line_per_broker_per_interval_with_the_count_held_back(
        captured: io.StringIO, client_lines: tuple[_Clock, logs.ClientLogLimiter]) -> None:
    clock, limiter = client_lines
    client = logging.getLogger(logs.CLIENT_LOGGER)
    for i in range(290):  # ~16 s of an outage of two brokers: 18 lines a second from many clients
        clock.now += 0.055
        client.error(_refused("127.0.0.1:9092" if i % 2 else "127.0.0.1:9093", 1 + i % 9, i % 3))
    shown = _client_docs(captured)
    assert len(shown) == 2, shown  # one per broker
    assert {"9092" in str(d["msg"]) for d in shown} == {True, False}
    assert all("repeated" not in d for d in shown)
    assert limiter.last_error is not None and "Connection refused" in limiter.last_error

    clock.now += 30.0  # the next interval: each broker's line again, saying how many were held back
    client.error(_refused("127.0.0.1:9092", 3, 0))
    client.error(_refused("127.0.0.1:9093", 4, 1))
    later = _client_docs(captured)[2:]
    assert [d["repeated"] for d in later] == [144, 144], later
    assert all(d["repeated_within_s"] == 30.0 for d in later)


def test_other_kinds_of_lines_and_other_brokers_are_never_held_back_by_a_repeat(
        captured: io.StringIO, client_lines: tuple[_Clock, logs.ClientLogLimiter]) -> None:
    client = logging.getLogger(logs.CLIENT_LOGGER)
    for _ in range(5):
        client.error(_refused("10.0.0.1:9092", 1, 0))
    client.error(_refused("10.0.0.2:9092", 1, 0))  # same words, another broker
    client.warning("SASLFAIL [rdkafka#producer-1] [thrd:10.0.0.1:9092/1]: 10.0.0.1:9092/1: SASL authentication "
                   "failed")  # another kind of line about the same broker
    client.error("ALL_BROKERS_DOWN [rdkafka#producer-2] 2/2 brokers are down")
    assert len(_client_docs(captured)) == 4


def test_debug_lines_are_not_limited(captured: io.StringIO, client_lines: tuple[_Clock, logs.ClientLogLimiter]) -> None:
    client = logging.getLogger(logs.CLIENT_LOGGER)
    _clock, limiter = client_lines
    record = logging.LogRecord(logs.CLIENT_LOGGER, logging.DEBUG, __file__, 1, "CONNECT 127.0.0.1:1/1", (), None)
    assert all(limiter.filter(record) for _ in range(5))
    assert client.level == logging.WARNING  # and at INFO they do not reach the log at all


def test_setup_installs_exactly_one_limiter() -> None:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        for _ in range(3):
            logs.setup("INFO", stream=io.StringIO())
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    client = logging.getLogger(logs.CLIENT_LOGGER)
    assert sum(isinstance(f, logs.ClientLogLimiter) for f in client.filters) == 1
