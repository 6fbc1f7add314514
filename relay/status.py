"""Rendering of ``outbox status``: a Rich table for people, JSON for scripts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from outbox.store.relay import Status

PROG_STATUS = "outbox status"  # what its messages and table start with (not "outbox relay": another command)
# An instance whose last heartbeat is older is shown as gone (rows of dead relays stay up to an hour). Well above
# the default heartbeat (0.5 s) and lease TTL (2.5 s), so a busy database does not make a live relay look gone.
LIVE_WITHIN_S = 10.0
UNKNOWN_VERSION = "unknown"  # a relay of a build from before relays recorded their version


def _version(v: str | None) -> str:
    return UNKNOWN_VERSION if v is None else v


def live_versions(st: Status) -> dict[str, int]:
    """How many live relay instances run each version, sorted by version label."""
    return dict(sorted(Counter(_version(i.version) for i in st.instances if i.heartbeat_age_s < LIVE_WITHIN_S)
                       .items()))


def _key(k: bytes | None) -> str:
    if k is None:
        return "(null)"
    try:
        return k.decode()
    except UnicodeDecodeError:
        return "0x" + k.hex()


def to_json(st: Status) -> dict[str, Any]:
    oldest = max((b.oldest_age_s or 0.0 for b in st.backlog), default=None)
    return {
        "pending": st.pending,
        "oldest_pending_age_s": oldest,
        "backlog": [{"shard": b.shard, "pending": b.pending, "oldest_age_s": b.oldest_age_s} for b in st.backlog],
        "leases": [{"shard": le.shard, "owner": le.owner, "epoch": le.epoch, "expires_in_s": le.expires_in_s}
                   for le in st.leases],
        "instances": [{"instance_id": i.instance_id, "host": i.host, "pid": i.pid, "version": i.version,
                       "heartbeat_age_s": i.heartbeat_age_s, "live": i.heartbeat_age_s < LIVE_WITHIN_S}
                      for i in st.instances],
        # live instances per version ("unknown": a build from before relays recorded it): an upgrade that must
        # wait for the old relays to be gone waits until only the new version is left (docs/operations.md)
        "relay_versions": live_versions(st),
        "dead_letters_open": st.dead_letters_open,
        "held_keys": [{"topic": h.topic, "key": _key(h.key), "dead_letters": h.dead_letters, "since": h.since}
                      for h in st.held_keys],
        "shards": st.shards,
        # Pending rows no relay with OUTBOX_SHARDS=shards claims (docs/operations.md#changing-the-shard-count).
        "stranded": {"pending": sum(b.pending for b in st.stranded),
                     "shards": [b.shard for b in st.stranded]},
    }


def render_table(st: Status, console: Console | None = None) -> None:
    c = console or Console()
    backlog = {b.shard: b for b in st.backlog}
    t = Table(title=f"{PROG_STATUS}: shards")
    for col in ("shard", "pending", "oldest pending", "owner", "epoch", "lease"):
        t.add_column(col, justify="right" if col in ("shard", "pending", "epoch") else "left")
    shards = sorted({le.shard for le in st.leases} | set(backlog))
    leases = {le.shard: le for le in st.leases}
    for s in shards:
        b, le = backlog.get(s), leases.get(s)
        age = f"{b.oldest_age_s:.1f}s" if b and b.oldest_age_s is not None else "-"
        lease = "-" if le is None or le.owner is None else (
            "expired" if le.free else f"{le.expires_in_s:.1f}s left")
        beyond = st.shards is not None and s >= st.shards
        if beyond:
            lease = f"not claimed: >= OUTBOX_SHARDS={st.shards}"
        t.add_row(str(s), str(b.pending if b else 0), age, (le.owner if le else None) or "-",
                  str(le.epoch) if le else "-", lease, style="bold red" if beyond and b and b.pending else None)
    c.print(t)
    if st.stranded:
        n, top = sum(b.pending for b in st.stranded), max(b.shard for b in st.stranded)
        c.print(f"[bold red]stranded: {n} pending rows in shards >= OUTBOX_SHARDS={st.shards} (highest shard {top})"
                f" are claimed by no relay[/]: set OUTBOX_SHARDS back to at least {top + 1} on the relays, let the"
                " backlog drain, then change it on writers and relays together"
                " (docs/operations.md#changing-the-shard-count)")
    oldest = max((b.oldest_age_s or 0.0 for b in st.backlog), default=0.0)
    if st.instances:
        r = Table(title="relay instances")
        for col in ("instance", "host", "pid", "version", "last heartbeat"):
            r.add_column(col, justify="right" if col == "pid" else "left")
        for i in st.instances:
            live = i.heartbeat_age_s < LIVE_WITHIN_S
            r.add_row(i.instance_id, i.host, str(i.pid), _version(i.version),
                      f"{i.heartbeat_age_s:.1f}s ago" + ("" if live else " (gone)"), style=None if live else "dim")
        c.print(r)
    versions = ", ".join(f"{v} x{n}" for v, n in live_versions(st).items()) or "-"
    c.print(f"pending: {st.pending}   oldest unpublished: {oldest:.1f}s   "
            f"live instances: {sum(live_versions(st).values())} (versions: {versions})   "
            f"open dead letters: {st.dead_letters_open}   held keys: {len(st.held_keys)}")
    if st.held_keys:
        h = Table(title="held keys (behind an open dead letter)")
        for col in ("topic", "key", "dead letters", "since"):
            h.add_column(col)
        for k in st.held_keys[:50]:
            h.add_row(k.topic, _key(k.key), str(k.dead_letters), str(k.since))
        c.print(h)
