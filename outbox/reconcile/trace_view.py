"""The terminal view of ``outbox trace``: one line per step of the event's journey."""

from __future__ import annotations

from typing import Any

from outbox.extras import missing_extra

try:
    from rich.console import Console
    from rich.markup import escape
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "outbox trace", "audit") from exc

from outbox.reconcile.trace import Journey


def print_journey(j: Journey, console: Console | None = None) -> None:
    con = console or Console(highlight=False)
    if not j.found:
        con.print(f"[red]unknown event[/red] {escape(j.query)}: no outbox row and no acknowledgement has this id "
                  "in the databases searched (check the id, the --database-url, or add --inbox-database-url)")
        return
    e = _safe(j.event) if j.event is not None else None
    if e is None:
        con.print(f"event {escape(j.query)}: [yellow]no outbox row[/yellow] (pruned after a checkpoint, or written by "
                  "another producer database); acknowledgements below")
    else:
        key = f" key {e['key']} seq {e['key_seq']}" if e["key"] is not None else " (no key)"
        con.print(f"event {e['event_id']} (outbox id {e['id']}) {e['type']} on {e['topic']}{key}")
        con.print(f"  written      {e['created_at']}  (transaction {e['tx_id']}, shard {e['shard']})")
        if e["published_at"] is not None:
            con.print(f"  published    {e['published_at']}  partition {e['kafka_partition']} offset "
                      f"{e['kafka_offset']} (relay epoch {e['relay_epoch']}, {e['attempts']} attempt(s))")
        elif e["dead_at"] is not None:
            con.print(f"  [red]dead-lettered[/red] {e['dead_at']}: {e['dead_reason']}"
                      + (f" (resolved: {e['resolution']} at {e['resolved_at']})" if e["resolution"] else ""))
        else:
            err = f"; last error: {e['last_error']}" if e["last_error"] else ""
            con.print(f"  [yellow]not published yet[/yellow] ({e['attempts']} attempt(s){err})")
    replays = (j.event or {}).get("replays") or []
    for r in replays:
        con.print(f"  replayed     by replay #{r['audit_id']} ({escape(str(r['actor']))}, {r['created_at']}): "
                  "re-queued and published again, same event id")
    if not j.acknowledgements:
        con.print("  acknowledged by no consumer group (in the databases searched)")
    for a in map(_safe, j.acknowledgements):
        state = "processed" if a["outcome"] == "processed" else f"[red]dead-lettered[/red] after {a['attempts']} " \
            f"attempts: {a['error']}"
        copies = ""
        if a.get("copies"):
            # 1 + (number of replays) copies are accounted for (docs/decisions/022); more is a duplicate
            color = "yellow" if len(a["copies"]) <= len(replays) else "red"
            why = " (the replay's copy)" if color == "yellow" else ""
            copies = f"; [{color}]also received from {', '.join(a['copies'])}{why}[/{color}]"
        con.print(f"  acknowledged by {a['consumer_group']} at {a['processed_at'] or a['received_at']} "
                  f"(from partition {a['kafka_partition']} offset {a['kafka_offset']}): {state}{copies}")


def _safe(d: dict[str, Any]) -> dict[str, Any]:
    """Data values with Rich markup escaped (a key or an error text may contain brackets)."""
    return {k: escape(v) if isinstance(v, str) else v for k, v in d.items()}
