"""Structured JSON logs on stderr, one object per line, with secrets redacted.

Redaction is applied to the formatted message (so ``%s`` args are covered), to every ``extra`` field, and to
exception and stack text. What counts as a secret:

* the password of any URL (``postgresql://user:***@host/db``), whatever the scheme;
* the value of any ``key=value``, ``key: value`` or ``"key": "value"`` whose key names a secret: ``password``,
  ``passwd``, ``secret``, ``token``, ``sasl.password``, ``ssl.key.password``, ``sasl.jaas.config``, any
  ``*hmac*key*`` / ``api_key`` (also libpq's ``password=...`` and JAAS ``password="..."``);
* any value registered with :func:`register_secret` (e.g. an HMAC signing key, wherever it appears), and the
  values of secret-named keys seen by :func:`register_secrets`.

API: :func:`setup` (the relay's entry point), :class:`JsonFormatter`, :class:`RedactingFilter` (for any other
handler, e.g. a plain-text one), :func:`redact` (structured values), :func:`redact_text` (a string), and
:class:`ClientLogLimiter`, the one rate limit on librdkafka's own lines (installed by :func:`setup`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

MASK = "***"
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_WORDS = r"(?:password|passwd|pwd|secret|token|sasl\.jaas\.config|api[_.-]?key|hmac[\w.-]*key|key\.pem)"
_SECRET_KEY = re.compile(_SECRET_WORDS, re.I)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)")
_KV = re.compile(
    r"""((?<![\w.-])[\w.-]*""" + _SECRET_WORDS + r"""[\w.-]*["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"',;&}\])]+)""",
    re.I,
)
_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(value: str | bytes | None) -> None:
    """Mask this exact value wherever it appears in a log line (values shorter than 4 characters are ignored:
    masking them would shred ordinary text)."""
    if value is None:
        return
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    if len(text) >= 4:
        with _lock:
            _registered.add(text)


def register_secrets(config: Mapping[str, Any]) -> None:
    """Register the values of secret-named keys (``sasl.password``, ...) and URL passwords in ``config``."""
    for k, v in config.items():
        if isinstance(v, Mapping):
            register_secrets(v)
        elif isinstance(v, str):
            if _SECRET_KEY.search(str(k)):
                register_secret(v)
            for m in _URL_PASSWORD.finditer(v):
                register_secret(m.group(2))


def redact_text(text: str) -> str:
    """``text`` with URL passwords, secret-named values and registered secrets masked."""
    text = _URL_PASSWORD.sub(rf"\1{MASK}\3", text)
    text = _KV.sub(lambda m: m.group(1) + (m.group(2)[0] + MASK + m.group(2)[0]
                                          if m.group(2)[:1] in "\"'" and m.group(2) else MASK), text)
    with _lock:
        secrets = sorted(_registered, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, MASK)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` safe to log: secret-named keys masked, strings scrubbed, containers recursed."""
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def _trace_ids() -> dict[str, str]:
    """The current OpenTelemetry span's ids, so a log line can be joined with its trace."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry-api is a dependency
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, extra fields, trace ids, exc. All redacted."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "msg": redact_text(record.getMessage()),
        }
        for k, v in vars(record).items():
            if k not in _STD and not k.startswith("_"):
                doc[k] = redact(v, k)
        doc.update(_trace_ids())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = redact_text(record.exc_text)
        if record.stack_info:
            doc["stack"] = redact_text(self.formatStack(record.stack_info))
        return json.dumps(doc, default=lambda o: redact_text(str(o)))


class RedactingFilter(logging.Filter):
    """Scrubs a record in place (message, args, exception text) for handlers with any formatter.

    Attach it to a *handler* (``handler.addFilter(RedactingFilter())``): handler filters see the records of
    every logger that reaches the handler, logger filters only their own logger's.
    """

    _fmt = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact_text(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._fmt.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for k, v in list(vars(record).items()):
            if k not in _STD and not k.startswith("_"):
                setattr(record, k, redact(v, k))
        return True


# How often a line repeated through an outage is shown: one kind of librdkafka line about one broker, a failing
# lease round. An outage made every Kafka client (two producers per shard, the admin and checkpoint clients) log
# each failed connect, ~18 ERROR lines a second with 8 shards; one line per broker per interval, with the count
# of those held back, says the same thing.
REPEAT_LOG_INTERVAL_S = 30.0
CLIENT_LOGGER = "relay.kafka.client"  # where librdkafka's lines arrive (relay/kafka/clients.py)
# "127.0.0.1:9092/bootstrap", "broker-1.kafka:9093/2", "[::1]:9092/1": how librdkafka names a broker.
_BROKER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+):\d+/[\w-]+")
_CLIENT_NAME = re.compile(r"\[rdkafka#[\w-]+\]")


class ClientLogLimiter(logging.Filter):
    """Lets one line per broker and kind of message through per ``interval_s``, and holds back the repeats; the
    next line shown for that key carries ``repeated``, the number held back since the last one shown.

    Lines that differ only in numbers (client names, "after 0ms", epochs) are the same kind; the broker they name
    (``host:port/id``) is part of the key, so an outage of one broker never hides another's lines. Only WARNING
    and above are limited: at DEBUG every line stays, for debugging. ``last_error`` is the latest ERROR line
    seen (shown or not), for the start-up wait's message.
    """

    def __init__(self, interval_s: float = REPEAT_LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s, self._clock = interval_s, clock
        self._shown: dict[str, tuple[float, int]] = {}  # key -> (when last shown, held back since)
        self._lock = threading.Lock()  # librdkafka's lines arrive on any thread that polls a client
        self.last_error: str | None = None

    @staticmethod
    def key(text: str) -> str:
        brokers = sorted(set(_BROKER.findall(text)))
        shape = _CLIENT_NAME.sub("[client]", text)
        for b in brokers:
            shape = shape.replace(b, "<broker>")
        return "|".join(brokers) + " " + re.sub(r"\d+", "#", shape)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.last_error = text
        key, now = self.key(text), self._clock()
        with self._lock:
            shown_at, held = self._shown.get(key, (None, 0))
            if shown_at is not None and now - shown_at < self.interval_s:
                self._shown[key] = (shown_at, held + 1)
                return False
            self._shown[key] = (now, 0)
        if held:
            record.repeated = held  # a field of the JSON line: "this many more like it since the last one shown"
            record.repeated_within_s = self.interval_s
        return True


def client_log_limiter() -> ClientLogLimiter | None:
    """The limiter :func:`setup` installed on librdkafka's logger, if any."""
    return next((f for f in logging.getLogger(CLIENT_LOGGER).filters if isinstance(f, ClientLogLimiter)), None)


def setup(level: str = "INFO", stream: TextIO | None = None, secrets: Iterable[str | None] = ()) -> None:
    """Route every logger to one JSON handler on ``stream`` (default stderr) at ``level``."""
    for s in secrets:
        register_secret(s)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # librdkafka's own lines come through "relay.kafka.client"; keep them at WARNING unless debugging, and
    # rate-limit their repeats (once per process: setup may run again, e.g. in tests).
    client = logging.getLogger(CLIENT_LOGGER)
    client.setLevel(level if level == "DEBUG" else "WARNING")
    for f in [f for f in client.filters if isinstance(f, ClientLogLimiter)]:
        client.removeFilter(f)
    client.addFilter(ClientLogLimiter())
    logging.getLogger("alembic").setLevel("WARNING")  # the start-up schema check would log its context at INFO
