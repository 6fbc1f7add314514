"""The zero-loss reconciler: outbox events vs consumer acknowledgements, with a verdict an auditor can check.

::

    report = reconcile(engine, [ConsumerDatabase(billing_engine)], Options(grace=timedelta(seconds=30)))
    report.verdict            # Verdict.PROVEN, DISCREPANCIES, or INCONCLUSIVE (nothing settled to compare yet)
    sealed = seal(report.to_dict(), key)   # content hash (+ HMAC) ; verify(sealed, key)

See docs/auditors.md for what the report shows and how to read it.
"""

from outbox.reconcile.compare import Progress, reconcile
from outbox.reconcile.html import render_html
from outbox.reconcile.model import Finding, GroupReport, Kind, Replay, Report, Verdict, Window, verdict_line
from outbox.reconcile.render import print_report
from outbox.reconcile.scope import ConsumerDatabase, Options
from outbox.reconcile.signing import Verification, content_hash, seal, verify
from outbox.reconcile.trace import Journey, trace

__all__ = [
    "ConsumerDatabase",
    "Finding",
    "GroupReport",
    "Journey",
    "Kind",
    "Options",
    "Progress",
    "Replay",
    "Report",
    "Verdict",
    "Verification",
    "Window",
    "content_hash",
    "print_report",
    "reconcile",
    "render_html",
    "seal",
    "trace",
    "verdict_line",
    "verify",
]
