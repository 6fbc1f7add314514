"""A self-contained HTML report for auditors: tables, inline SVG charts, and the signed JSON embedded.

No external assets (no scripts, fonts or images are fetched), so the file can be archived and opened offline.
Charts are hand-made SVG: the delivery-latency distribution per group (log2 bins) and the backlog over the
window (created minus published, from the outbox side).

The page is rendered from the embedded JSON alone, so ``outbox verify report.html`` checks the embedded report's
hashes and signature and then that the page is exactly what that report renders to (:func:`compare_page`).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from enum import Enum
from html import escape, unescape
from typing import Any

from outbox.reconcile.render import COLUMNS, latency_label, percentile, replay_lines
from outbox.version import VERSION

W, H, PAD = 720, 260, 48
COLORS = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096")


def _axes(title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
            f'role="img" aria-label="{escape(title)}">',
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{escape(title)}</text>',
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 10}" y2="{H - PAD}" stroke="#333"/>',
            f'<line x1="{PAD}" y1="28" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>']


def share_scale(top_share: float) -> tuple[float, list[float]]:
    """The y axis of the latency chart: its top (a share, at most 1) and its ticks, from 0 up to the top.

    The top is the tallest bar rounded up to a step of 10 % (5 % below 20 %), so a chart whose bars are all short
    still uses its height and every bar reads against a labelled gridline.
    """
    step = 0.05 if top_share <= 0.2 else 0.1 if top_share <= 0.5 else 0.2
    n = max(1, min(round(1 / step), math.ceil(round(top_share / step, 9))))  # whole steps, at most 100 %
    return n * step, [i * step for i in range(n + 1)]


def latency_svg(series: dict[str, list[list[int]]]) -> str:
    """Grouped bars: share of events per log2 latency bin, one colour per series.

    Each bin is labelled by its upper edge (``≤32ms`` holds the events under 32 ms), the form of the tables'
    p50 / p99, so a percentile reads straight off the chart. The y axis is the share of each series' events.
    """
    bins = sorted({k for hist in series.values() for k, _n in hist})
    out = _axes("delivery latency (share of events per bin)")
    if not bins:
        return "".join([*out, f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no data</text></svg>'])
    ks = list(range(bins[0], bins[-1] + 1))
    slot = (W - PAD - 20) / len(ks)
    bar = max(1.0, slot * 0.8 / max(1, len(series)))
    top = 28
    shares = {name: (dict((k, n) for k, n in hist), sum(n for _k, n in hist) or 1) for name, hist in series.items()}
    ymax, ticks = share_scale(max(n / total for counts, total in shares.values() for n in counts.values()))
    for t in ticks:
        y = H - PAD - t / ymax * (H - PAD - top)
        out.append(f'<line x1="{PAD - 4}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                   f'<text x="{PAD - 6}" y="{y + 3:.1f}" font-size="10" text-anchor="end">{t:.0%}</text>')
    out.append(f'<text x="12" y="{(H - PAD + top) / 2:.1f}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {(H - PAD + top) / 2:.1f})">share of events</text>')
    for si, (name, (counts, total)) in enumerate(shares.items()):
        color = COLORS[si % len(COLORS)]
        for i, k in enumerate(ks):
            h = counts.get(k, 0) / total / ymax * (H - PAD - top)
            x = PAD + 4 + i * slot + si * bar
            out.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}">'
                       f'<title>{escape(name)}: {counts.get(k, 0):,} events in [{latency_label(k)}, '
                       f'{latency_label(k + 1)})</title></rect>')
        out.append(f'<rect x="{W - 170}" y="{30 + si * 16}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{W - 155}" y="{39 + si * 16}" font-size="11">{escape(name)}</text>')
    for i, k in enumerate(ks):
        if len(ks) <= 16 or i % 2 == 0:
            out.append(f'<text x="{PAD + 4 + i * slot + slot / 2:.1f}" y="{H - PAD + 14}" font-size="10" '
                       f'text-anchor="middle">≤{latency_label(k + 1)}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" font-size="11" text-anchor="middle">latency (each bin up to its '
               'upper edge, as p50 / p99 in the tables)</text>')
    return "".join([*out, "</svg>"])


def backlog_svg(points: list[list[Any]]) -> str:
    """Backlog (created minus published) over the window, as a line with the peak marked."""
    out = _axes("backlog over the window (events created, not yet published)")
    if not points:
        return "".join([*out, "</svg>"])
    vals = [int(c) - int(p) for _t, c, p in points]
    peak = max(*vals, 1)
    step = (W - PAD - 20) / max(1, len(vals) - 1)
    xy = [(PAD + i * step, H - PAD - v / peak * (H - PAD - 40)) for i, v in enumerate(vals)]
    out.append('<polyline fill="none" stroke="#2b6cb0" stroke-width="2" points="'
               + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
    out.append(f'<text x="{PAD - 4}" y="40" font-size="10" text-anchor="end">{peak:,}</text>'
               f'<text x="{PAD - 4}" y="{H - PAD}" font-size="10" text-anchor="end">0</text>')
    for i, anchor in ((0, "start"), (len(points) // 2, "middle"), (len(points) - 1, "end")):
        t = datetime.fromisoformat(points[i][0]).strftime("%H:%M:%S")
        out.append(f'<text x="{xy[i][0]:.1f}" y="{H - PAD + 14}" font-size="10" text-anchor="{anchor}">{t}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 12}" font-size="11" text-anchor="middle">time (UTC)</text>')
    return "".join([*out, "</svg>"])


# The report's verdict -> the CSS class of its banner (an unknown one reads as a discrepancy, never as proven).
VERDICT_CLASS = {"proven": "proven", "inconclusive": "inconclusive", "discrepancies": "disc"}
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#1a202c;max-width:1100px}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #cbd5e0;padding:4px 8px}
th{background:#edf2f7}td.n{text-align:right}.bad{color:#c53030;font-weight:bold}.ok{color:#2f855a;font-weight:bold}
.verdict{font-size:1.3em;padding:.6em;border-radius:6px}.proven{background:#f0fff4}.disc{background:#fff5f5}
.inconclusive{background:#fffff0}.open{color:#b7791f;font-weight:bold}
code{background:#edf2f7;padding:1px 4px}details{margin:1em 0}"""


BAD = ("missing", "duplicated", "out_of_order", "stuck", "unexpected")
FINDING_HEAD = "".join(f"<th>{c}</th>" for c in ("group", "kind", "outbox id", "event id", "topic", "key", "seq",
                                                  "detail"))


def _group_rows(d: dict[str, Any]) -> str:
    rows = []
    for g in d["groups"]:
        cells = "".join(f'<td class="n{" bad" if g.get(c) and c in BAD else ""}">{g.get(c, 0):,}</td>'
                        for c in COLUMNS)
        lat = g["delivery_latency_ms"]
        css = {"proven": "ok", "inconclusive": "open"}.get(g["verdict"], "bad")
        verdict = f'<span class="{css}">{escape(g["verdict"])}</span>'
        rows.append(f"<tr><td>{escape(g['group'])}</td><td>{escape(', '.join(g['topics']))}</td>{cells}"
                    f"<td>{percentile(lat, .5)} / {percentile(lat, .99)}</td><td>{verdict}</td></tr>")
    head = "".join(f"<th>{c.replace('_', ' ')}</th>" for c in COLUMNS)
    return (f"<table><tr><th>group</th><th>topics</th>{head}<th>latency p50 / p99</th><th>verdict</th></tr>"
            f"{''.join(rows)}</table>")


def _findings(d: dict[str, Any]) -> str:
    findings = [(g["group"], f) for g in d["groups"] for f in g["findings"]]
    findings += [("(outbox)", f) for f in d["outbox_findings"]]
    if not findings:
        return ("<p>None: nothing is missing, duplicated, out of order, stuck, unexpected, dead-lettered or "
                "replayed.</p>")
    rows = "".join(
        f"<tr><td>{escape(g)}</td><td>{escape(f['kind'])}</td><td>{f['outbox_id']}</td>"
        f"<td><code>{escape(f['event_id'] or '')}</code></td><td>{escape(f['topic'] or '')}</td>"
        f"<td>{escape(f['key'] or '')}</td><td>{'' if f['key_seq'] is None else f['key_seq']}</td>"
        f"<td>{escape(f['detail'])}</td></tr>" for g, f in findings)
    return f"<table><tr>{FINDING_HEAD}</tr>{rows}</table>"


def _replays(d: dict[str, Any]) -> str:
    lines = replay_lines(d)
    if not lines:
        return "<p>No replay re-queued events of this window.</p>"
    return (f"<ul>{''.join(f'<li>{escape(x)}</li>' for x in lines)}</ul><p>An event received again from the position "
            "its replay re-published it at is counted as <em>replayed</em>: an audited re-publication by an operator "
            "(<code>outbox replay</code>, recorded in <code>replay_audit</code>), not a discrepancy.</p>")


def _checkpoints(d: dict[str, Any]) -> str:
    items = []
    for g in d["groups"]:
        c = g.get("checkpoint")
        if c:
            items.append(f"<li>{escape(g['group'])}: ids {c['id_lo']}..{c['id_hi']}, {c['expected']:,} events, "
                         f"digest <code>{escape(c['digest'])}</code></li>")
    return f"<ul>{''.join(items)}</ul>" if items else "<p>No checkpoint recorded by this run.</p>"


def _window(d: dict[str, Any]) -> str:
    w = d["window"]
    created = f", created {escape(str(w['since']))} .. {escape(str(w['until']))}" if w["since"] or w["until"] else ""
    return (f"Window: outbox ids {w['id_lo']}..{w['id_hi']}{created}; events published after "
            f"<code>{escape(w['cutoff'])}</code> (grace {w['grace_s']:g}s) are in flight; unpublished events "
            f"older than {w['stuck_after_s']:g}s are stuck. Digests: {escape(d['digest']['algorithm'])}, "
            f"2<sup>{d['digest']['bucket_bits']}</sup> ids per bucket.")


def _sampling(d: dict[str, Any]) -> str:
    step = d["charts"].get("sample_step", 1)
    if step <= 1:
        return "<p>Charts use every event of the window.</p>"
    return (f"<p>Charts use every {step:,}th outbox id of the window (counts scaled by {step:,}); the counts and "
            "the verdict above are exact.</p>")


def render_html(d: dict[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    t = d["totals"]
    series = {g["group"]: g["delivery_latency_ms"] for g in d["groups"]}
    series["publish (outbox → Kafka)"] = d["charts"]["publish_latency_ms"]
    integ = d.get("integrity") or {}
    sig = (f"HMAC-SHA256 signed (key id <code>{escape(str(integ.get('key_id')))}</code>)"
           if integ.get("hmac_sha256") else "not signed (content hash only)")
    embedded = json.dumps(d, indent=1, ensure_ascii=False, default=str)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="{GENERATOR} {escape(VERSION)}">
<title>kafka-outbox reconcile report — {escape(d['verdict'])}</title><style>{CSS}</style></head><body>
<h1>kafka-outbox reconcile report</h1>
<p class="verdict {VERDICT_CLASS.get(d['verdict'], 'disc')}">{escape(d['verdict_line'])}</p>
<p>Producer database <code>{escape(d['producer_database'])}</code>; generated {escape(d['generated_at'])}
in {d['elapsed_s']:.2f}s. {_window(d)}</p>
<h2>Per consumer group</h2>{_group_rows(d)}
<p>Outbox: {d['events']:,} events expected; {t['in_flight']:,} in flight; {t['stuck']:,} stuck;
{t['relay_dead_lettered']:,} dead-lettered by the relay.</p>
<h2>Charts</h2>{_sampling(d)}{latency_svg(series)}<br>{backlog_svg(d['charts']['backlog'])}
<h2>Named events</h2>{_findings(d)}
<h2>Replays</h2>{_replays(d)}
<h2>Checkpoints</h2>{_checkpoints(d)}
<h2>Integrity</h2><p>Content SHA-256 <code>{escape(str(integ.get('content_sha256')))}</code>; {sig}.
Verify this page with <code>outbox verify</code> and its file name: it checks the hashes (and signature) of the
JSON below, then that the rest of the page is what that JSON renders to; see docs/auditors.md.</p>
<details><summary>{EMBEDDED_SUMMARY}</summary><pre id="report-json">{escape(embedded)}</pre></details>
</body></html>
"""


GENERATOR = "kafka-outbox"
EMBEDDED_SUMMARY = "The report as JSON (the signed form)"
# Pages written before the <pre> had an id are found by the summary alone; an escaped report holds no "<".
_EMBEDDED = re.compile(rf"<details><summary>{re.escape(EMBEDDED_SUMMARY)}</summary><pre[^>]*>([^<]*)</pre>")
_GENERATOR = re.compile(rf'<meta name="generator" content="{GENERATOR} ([^"<]*)">')


def embedded_json(page: str) -> str | None:
    """The JSON text of the report a page of :func:`render_html` embeds, or None when it holds none, or several."""
    found = _EMBEDDED.findall(page)
    return unescape(found[0]) if len(found) == 1 else None


class PageMatch(Enum):
    """How a page compares with what its embedded report renders to (:func:`compare_page`)."""

    SAME = "same"  # byte for byte: the tables and charts shown are the embedded report's
    EDITED = "edited"  # rendered by this version, yet different: the page was changed outside the embedded JSON
    NOT_COMPARED = "not compared"  # written by another version (or none said), whose rendering may differ


def compare_page(page: str, report: dict[str, Any]) -> tuple[PageMatch, str | None]:
    """Whether ``page`` is what ``report`` (its embedded JSON, parsed) renders to, and the version that wrote it.

    Rendering is deterministic, so a page written by this version must come out identical; one written by another
    version (its generator tag says which) can only be compared by that version.
    """
    m = _GENERATOR.search(page)
    written_by = unescape(m.group(1)) if m else None
    if page == render_html(report):
        return PageMatch.SAME, written_by
    return (PageMatch.EDITED if written_by == VERSION else PageMatch.NOT_COMPARED), written_by
