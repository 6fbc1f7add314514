"""The terminal view of a report (Rich), read from the report's JSON form. The verdict line comes last."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

COLUMNS = ("expected", "acknowledged", "missing", "duplicated", "out_of_order", "stuck", "dead_lettered",
           "unexpected", "in_flight")
BAD = {"missing", "duplicated", "out_of_order", "stuck", "unexpected"}
SHOW_FINDINGS = 20


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
    t = Table(title="acknowledgements per consumer group", title_justify="left")
    t.add_column("group")
    t.add_column("topics")
    for c in COLUMNS:
        t.add_column(c.replace("_", " "), justify="right")
    t.add_column("p50 / p99")
    t.add_column("verdict")
    for g in d["groups"]:
        cells = [f"[red]{g[c]:,}[/red]" if c in BAD and g[c] else f"{g[c]:,}" for c in COLUMNS]
        lat = g["delivery_latency_ms"]
        ok = g["verdict"] == "proven"
        t.add_row(Text(g["group"]), Text(", ".join(g["topics"])), *cells,
                  f"{percentile(lat, .5)} / {percentile(lat, .99)}",
                  "[green]proven[/green]" if ok else "[red]discrepancies[/red]")
    return t


def findings_table(d: dict[str, Any]) -> Table | None:
    rows = [(g["group"], f) for g in d["groups"] for f in g["findings"]]
    rows += [("(outbox)", f) for f in d["outbox_findings"] if not any(f == x for _g, x in rows)]
    if not rows:
        return None
    t = Table(title="named events (the JSON report lists up to the cap per kind)", title_justify="left")
    for c in ("group", "kind", "outbox id", "event id", "topic", "key", "seq", "detail"):
        t.add_column(c, overflow="fold")
    for g, f in rows[:SHOW_FINDINGS]:
        t.add_row(*(Text(x) for x in (g, f["kind"], str(f["outbox_id"]), f["event_id"] or "", f["topic"] or "",
                                      f["key"] or "", "" if f["key_seq"] is None else str(f["key_seq"]), f["detail"])))
    if len(rows) > SHOW_FINDINGS:
        t.caption = f"… {len(rows) - SHOW_FINDINGS} more in --format json / --html"
    return t


def print_report(d: dict[str, Any], console: Console | None = None) -> None:
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
    for g in d["groups"]:
        if g.get("checkpoint"):
            c = g["checkpoint"]
            con.print(f"checkpoint {escape(g['group'])}: ids {c['id_lo']}..{c['id_hi']} proven "
                      f"({c['expected']:,} events, digest {c['digest']})")
    for n in d.get("notes", []):
        con.print(f"note: {escape(n)}")
    style = "bold green" if d["verdict"] == "proven" else "bold red"
    con.print(Text(d["verdict_line"], style=style))
