"""The reconciler's inputs, checked before a run: its settings from the environment (the only place
``outbox.reconcile`` reads it) and the limits of the window and tuning values.

======================== ===================================================================================
variable                 meaning
======================== ===================================================================================
OUTBOX_REPORT_HMAC_KEY   secret for ``outbox reconcile --sign`` and ``outbox verify`` (HMAC-SHA256). At least
                         16 characters; keep it in a secret store, not beside the reports. When it is set,
                         ``outbox verify`` also *requires* a signature, so a stripped signature is caught.
======================== ===================================================================================

The checks below take the name to report (a flag such as ``--from-id`` for the CLI, a field such as ``from_id``
for :class:`~outbox.reconcile.Options`): a window that is empty by mistake must fail loudly, because a run over
no events is "proven" and an auditor would archive it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from outbox import timeparse
from outbox.errors import ConfigError

HMAC_KEY_VAR = "OUTBOX_REPORT_HMAC_KEY"
MIN_KEY_CHARS = 16
MAX_ID = 2**63 - 1  # outbox ids are Postgres bigint; a larger bound cannot be sent as a query parameter
MAX_SECONDS = int(timeparse.MAX_DURATION.total_seconds())  # 100 years: see outbox.timeparse
MAX_JOBS = 64  # connections per side; more only queues on Postgres's max_connections
MAX_CAP = 1_000_000  # named events per kind and group; counts are exact whatever the cap


def hmac_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key, or None when unset. A key that is too short fails fast."""
    raw = (os.environ if environ is None else environ).get(HMAC_KEY_VAR, "")
    if not raw:
        return None
    if len(raw) < MIN_KEY_CHARS:
        raise ConfigError(f"{HMAC_KEY_VAR} must be at least {MIN_KEY_CHARS} characters, got {len(raw)}")
    return raw.encode()


def in_range(value: float, name: str, lo: float, hi: float, unit: str = "") -> None:
    """``lo <= value <= hi``, NaN included in the failures (it compares false with everything)."""
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}{unit}, got {value}")


def seconds(value: float, name: str) -> timedelta:
    """A number of seconds (``--grace``, ``--stuck-after``) as a timedelta: not negative, NaN or infinite."""
    in_range(value, name, 0, MAX_SECONDS, " seconds (100 years)")
    return timedelta(seconds=value)


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO-8601 time (UTC if naive) or a duration ago (:mod:`outbox.timeparse`); an error names ``name``."""
    if value is None:
        return None
    try:
        return timeparse.parse_time(value, datetime.now(UTC))
    except timeparse.TimeParseError as exc:
        raise timeparse.TimeParseError(f"{name}: {exc}") from None


def check_window(from_id: int | None, to_id: int | None, since: datetime | None, until: datetime | None,
                 names: tuple[str, str, str, str] = ("--from-id", "--to-id", "--since", "--until")) -> None:
    """Ids within bigint and a window that is not empty: ``from <= to`` and ``since < until``."""
    for value, name in ((from_id, names[0]), (to_id, names[1])):
        if value is not None:
            in_range(value, name, 1, MAX_ID, " (outbox ids are positive bigints)")
    if from_id is not None and to_id is not None and from_id > to_id:
        raise ConfigError(f"{names[0]} ({from_id}) is after {names[1]} ({to_id}): the window would be empty")
    if since is not None and until is not None and since >= until:
        how = "is after" if since > until else "is the same time as"
        raise ConfigError(f"{names[2]} ({since.isoformat()}) {how} {names[3]} ({until.isoformat()}): the window "
                          "would be empty (it holds the events created at or after the first and before the second)")


def check_writable(path: Path | None, name: str) -> None:
    """Fail before a run (which may take minutes) if the report could not be written to ``path``."""
    if path is None:
        return
    try:
        if path.is_dir():
            reason = "it is a directory; give a file name"
        elif path.exists():
            reason = "" if os.access(path, os.W_OK) else "permission denied"
        elif not path.absolute().parent.is_dir():
            reason = f"directory {path.absolute().parent} does not exist"
        else:
            writable = os.access(path.absolute().parent, os.W_OK | os.X_OK)
            reason = "" if writable else f"permission denied in {path.absolute().parent}"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if reason:
        raise ConfigError(f"cannot write the report to {path} ({name}): {reason}")


def check_trace_query(ident: str) -> None:
    """What ``outbox trace`` accepts: an event id (UUID) or an outbox row id (1 to :data:`MAX_ID`)."""
    try:
        uuid.UUID(ident)
        return
    except ValueError:
        pass
    if not (re.fullmatch(r"[0-9]+", ident) and 1 <= int(ident) <= MAX_ID):
        raise ConfigError(f"{ident!r} is neither an event id (UUID) nor an outbox row id (row ids are positive "
                          f"integers, 1 to {MAX_ID})")
