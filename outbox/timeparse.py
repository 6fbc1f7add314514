"""The one parser for the times and durations users type on the command line.

A **duration** is a number (decimals allowed) and one unit: ``s``, ``m``, ``h``, ``d`` or ``w`` (``45s``,
``1.5h``, ``30d``, ``2w``), at most :data:`MAX_DURATION`. A **time** is ISO 8601 (UTC when it has no offset) or,
where the caller passes ``now``, a duration ago (``2h`` is two hours before ``now``).

Errors are :class:`TimeParseError`, whose message quotes the text but names no flag: each CLI adds its own
(``outbox prune --older-than`` as a usage error, exit 2; ``outbox reconcile --since`` as ``--since: …``, exit 2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from outbox.errors import TimeParseError

__all__ = ["MAX_DURATION", "TimeParseError", "parse_duration", "parse_time"]

# A century is beyond any retention or audit window, and keeps ``now - duration`` inside the calendar datetime
# can hold (year 1): a longer one would fail later with an OverflowError instead of a message.
MAX_DURATION = timedelta(days=36_500)
# ASCII digits only: float() would take other scripts' digits too, which nobody means to type here.
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])", re.ASCII)
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def _duration(text: str) -> timedelta | None:
    """The duration ``text`` spells (zero allowed), None when it is not one, or an error when it is too long."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        return None
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    # Compare as floats first: timedelta() itself overflows (OverflowError) on a huge or infinite count.
    if seconds > MAX_DURATION.total_seconds():
        raise TimeParseError(f"{text!r} is too long: at most {MAX_DURATION.days}d (100 years)")
    return timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """``45s``, ``90m``, ``12h``, ``30d``, ``2w``: more than zero, at most :data:`MAX_DURATION`."""
    d = _duration(text)
    if d is None:
        raise TimeParseError(f"{text!r} is not a duration like 45s, 90m, 12h, 30d or 2w")
    if d <= timedelta(0):  # "0d", or a fraction of a microsecond
        raise TimeParseError(f"{text!r} is not longer than zero: give a duration like 30d")
    return d


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO-8601 time, aware (UTC when it has no offset); with ``now`` also a duration ago, zero included.

    ``now`` must be aware, so that both forms give an aware time that compares with the other.
    """
    if now is not None:
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        try:
            ago = _duration(text)
        except TimeParseError:
            raise TimeParseError(
                f"a duration ago must be at most {MAX_DURATION.days}d (100 years), got {text!r}"
            ) from None
        if ago is not None:
            try:
                return now - ago
            except OverflowError:  # only when ``now`` itself is within a century of year 1
                raise TimeParseError(f"{text!r} ago is before the year 1") from None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        # Two wordings, each the one its CLI printed before this parser was shared (tests and docs quote them).
        if now is not None:
            raise TimeParseError(
                f"expected an ISO time (2026-11-01T00:00:00Z) or a duration ago like 2h, got {text!r}"
            ) from None
        raise TimeParseError(f"{text!r} is not an ISO 8601 time (2026-11-22T10:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)
