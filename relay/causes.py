"""The cause chain of an error, as every command prints it below its own first line: one line per cause.

Each command keeps its own first line (``error: ...``, ``outbox relay: <what>: ...``); the lines below it are
these, so the driver's own words (Postgres's message, librdkafka's reason) stay visible under ours. They are
redacted like the logs: a driver's words may quote a setting's value (a URL with its password, a SASL secret).
"""

from __future__ import annotations

from relay.logs import redact_text


def cause_lines(exc: BaseException, *, implicit: bool = False) -> list[str]:
    """``  caused by <Type>: <first line>`` for each error ``exc`` was raised from (``__cause__``), nearest first.

    Only the first line of each: SQLAlchemy appends the statement and a link, psycopg the query's context.
    ``implicit``: when ``exc`` has no explicit cause, start at the error it was raised while handling
    (``__context__``), for errors a library raised without ``from`` (Alembic's, in ``outbox migrate``)."""
    lines: list[str] = []
    seen: set[int] = set()  # a hand-built chain can loop (``a.__cause__ = b; b.__cause__ = a``)
    cause = exc.__cause__ or (exc.__context__ if implicit else None)
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        text = str(cause).strip().splitlines()
        lines.append(redact_text(f"  caused by {type(cause).__name__}: {text[0] if text else ''}"))
        cause = cause.__cause__
    return lines
