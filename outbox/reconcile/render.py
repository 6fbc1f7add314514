"""The terminal view of a report (Rich), read from the report's JSON form. The verdict line comes last."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outbox.extras import missing_extra

try:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "outbox.reconcile (its terminal report)", "audit") from exc

COLUMNS = ("expected", "acknowledged", "missing", "duplicated", "replayed", "out_of_order", "stuck",
           "dead_lettered", "unexpected", "in_flight")
BAD = {"missing", "duplicated", "out_of_order", "stuck", "unexpected"}
SHOW_FINDINGS = 20
VERDICT_STYLE = {"proven": "green", "inconclusive": "yellow", "discrepancies": "red"}


def latency_label(k: int) -> str:
    ms = 2 ** k
    return f"{ms}ms" if ms < 1000 else f"{ms / 1000:g}s" if ms < 120_000 else f"{ms / 60000:.0f}min"


def percentile(hist: list[list[int]], q: float) -> str:
    """The upper edge of the log2 bin holding quantile ``q`` (an upper bound on the true value)."""
    total = sum(n for _k, n in hist)
    if not total:
        return "-"
    seen = 0
    for k, n in sorted(hist):
        seen += n
        if seen >= q * total:
            return "≤" + latency_label(k + 1)
    return "-"


def summary_table(d: dict[str, Any]) -> Table:
    """One column per group, one row per measure: fits a narrow terminal whatever the number of measures."""
    t = Table(title="acknowledgements per consumer group", title_justify="left")
    t.add_column("")
    for g in d["groups"]:
        t.add_column(Text(g["group"]), justify="right")
    t.add_row("topics", *(Text(", ".join(g["topics"])) for g in d["groups"]))
    for c in COLUMNS:
        # .get: a v1 report (before replays were told apart) has no "replayed"
        t.add_row(c.replace("_", " "), *(f"[red]{g[c]:,}[/red]" if c in BAD and g[c] else f"{g.get(c, 0):,}"
                                          for g in d["groups"]))
    t.add_row("latency p50 / p99", *(f"{percentile(g['delivery_latency_ms'], .5)} / "
                                     f"{percentile(g['delivery_latency_ms'], .99)}" for g in d["groups"]))
    t.add_row("verdict", *(f"[{VERDICT_STYLE.get(g['verdict'], 'red')}]{g['verdict']}[/]" for g in d["groups"]))
    return t


def findings_table(d: dict[str, Any]) -> Table | None:
    rows = [(g["group"], f) for g in d["groups"] for f in g["findings"]]
    rows += [("(outbox)", f) for f in d["outbox_findings"] if not any(f == x for _g, x in rows)]
    if not rows:
        return None
    rows.sort(key=lambda r: r[1]["kind"] not in BAD)  # discrepancies first; replayed/dead-lettered only inform
    t = Table(title="named events (the JSON report lists up to the cap per kind)", title_justify="left")
    for c in ("group", "kind", "outbox id", "event id", "topic", "key", "seq", "detail"):
        t.add_column(c, overflow="fold")
    for g, f in rows[:SHOW_FINDINGS]:
        t.add_row(*(Text(x) for x in (g, f["kind"], str(f["outbox_id"]), f["event_id"] or "", f["topic"] or "",
                                      f["key"] or "", "" if f["key_seq"] is None else str(f["key_seq"]), f["detail"])))
    if len(rows) > SHOW_FINDINGS:
        t.caption = f"… {len(rows) - SHOW_FINDINGS} more in --format json / --html"
    return t


def replay_lines(d: dict[str, Any]) -> list[str]:
    """One line per audited replay that re-queued ids of the window (the report's ``replays`` section)."""
    out = []
    for r in d.get("replays", []):
        runs = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in r["id_runs"])
        left = r["id_runs_total"] - len(r["id_runs"])
        more = f" and {left:,} more runs" if left > 0 else ""
        out.append(f"replay #{r['audit_id']} by {r['actor']} at {r['created_at']}: {r['ids_in_window']:,} of its "
                   f"{r['event_count']:,} re-queued events in this window (ids {runs}{more}); the copies it caused "
                   "count as replayed, not duplicated")
    return out


def print_report(d: dict[str, Any], console: Console | None = None, before_verdict: Sequence[str] = ()) -> None:
    """The summary and the named events; ``before_verdict`` lines go just above the verdict, which is last."""
    con = console or Console()
    w = d["window"]
    con.print(f"[bold]outbox reconcile[/bold]  producer {escape(d['producer_database'])}")
    con.print(f"window: ids {w['id_lo']}..{w['id_hi']}"
              + (f", created {w['since'] or '-∞'} .. {w['until'] or 'now'}" if w["since"] or w["until"] else "")
              + f"; grace {w['grace_s']:g}s (cutoff {w['cutoff']}); stuck after {w['stuck_after_s']:g}s; "
              f"digest {d['digest']['algorithm']}/{d['digest']['bucket_bits']} bits; {d['elapsed_s']:.2f}s")
    con.print(summary_table(d))
    ft = findings_table(d)
    if ft is not None:
        con.print(ft)
    t = d["totals"]
    con.print(f"outbox: {d['events']:,} events expected, {t['in_flight']:,} in flight, {t['stuck']:,} stuck, "
              f"{t['relay_dead_lettered']:,} dead-lettered by the relay")
    for line in replay_lines(d):
        con.print(Text(line))
    for g in d["groups"]:
        if g.get("checkpoint"):
            c = g["checkpoint"]
            con.print(f"checkpoint {escape(g['group'])}: ids {c['id_lo']}..{c['id_hi']} proven "
                      f"({c['expected']:,} events, digest {c['digest']})")
    for n in d.get("notes", []):
        con.print(f"note: {escape(n)}")
    for line in before_verdict:
        con.print(Text(line), soft_wrap=True)
    style = "bold " + VERDICT_STYLE.get(d["verdict"], "red")
    con.print(Text(d["verdict_line"], style=style), soft_wrap=True)  # never wrapped: it is the last line
