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
handler, e.g. a plain-text one), :func:`redact` (structured values), :func:`redact_text` (a string).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
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
    # librdkafka's own lines come through "relay.kafka.client"; keep them at WARNING unless debugging.
    logging.getLogger("relay.kafka.client").setLevel(level if level == "DEBUG" else "WARNING")
    logging.getLogger("alembic").setLevel("WARNING")  # the start-up schema check would log its context at INFO
