"""``outbox reconcile | verify | trace``: the auditor's commands (docs/auditors.md).

Exit codes: 0 proven / verified / found, 1 discrepancies / the report was edited / unknown event, 2 could not run
(a bad argument such as an empty window, a bad database URL or an unwritable report path; database unreachable,
no subscriptions, a file that is not a JSON or HTML report, missing key to check a signature), 3 configuration error,
4 inconclusive (``reconcile`` only: a group compared nothing while events of its topics are in flight).
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from outbox.errors import ConfigError, OutboxError, ReconcileError
from outbox.reconcile import config as cfg
from outbox.reconcile.model import Verdict
from relay import dburl
from relay.causes import cause_lines
from relay.cli.ops_args import Format

EXIT_OK, EXIT_FOUND, EXIT_COULD_NOT_RUN, EXIT_CONFIG = 0, 1, 2, 3
EXIT_INCONCLUSIVE = 4
"""``reconcile`` proved nothing yet: no discrepancy, but events are still in flight where nothing was compared.
Its own code, so that automation never takes it for proof (0) nor for a loss (1): run again after the grace."""
VERDICT_EXIT = {Verdict.PROVEN: EXIT_OK, Verdict.DISCREPANCIES: EXIT_FOUND, Verdict.INCONCLUSIVE: EXIT_INCONCLUSIVE}

DbUrl = Annotated[str, typer.Option("--database-url", envvar="OUTBOX_DATABASE_URL", show_envvar=True,
                                    help="SQLAlchemy URL of the producer (outbox) database.")]
InboxUrls = Annotated[list[str] | None, typer.Option(
    "--inbox-database-url", help="A consumer database holding inbox rows (repeatable). Default: the producer's.")]
Schema = Annotated[str | None, typer.Option("--schema", envvar="OUTBOX_SCHEMA", show_envvar=True,
                                            help="Postgres schema of the outbox tables (default outbox).")]


class Digest(Enum):
    HASH = "hash"
    MD5 = "md5"


def fail(exc: BaseException, code: int) -> typer.Exit:
    """Print the error and its cause chain (one line each) to stderr; return the Exit to raise."""
    err = Console(stderr=True, highlight=False)
    err.print(f"[bold red]error:[/bold red] {escape(str(exc))}")
    for line in cause_lines(exc):
        err.print(escape(line))
    return typer.Exit(code)


class RichProgress:
    """The reconciler's progress, as a Rich bar on stderr (only when stderr is a terminal)."""

    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=self.console, transient=True, disable=not self.console.is_terminal)
        self.task: Any = None

    def start(self, label: str, total: int) -> None:
        if self.task is None:
            self.bar.start()
        else:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(label, total=total)

    def advance(self, n: int = 1) -> None:
        self.bar.advance(self.task, n)

    def stop(self) -> None:
        self.bar.stop()


def _engines(database_url: str, inbox_urls: list[str], jobs: int) -> tuple[sa.Engine, list[sa.Engine]]:
    """Engines for URLs checked by relay.dburl: a bad one is named by its flag, not by the driver lookup."""
    flags = ["--database-url (OUTBOX_DATABASE_URL)",
             *(f"--inbox-database-url #{i}" if len(inbox_urls) > 1 else "--inbox-database-url"
               for i in range(1, len(inbox_urls) + 1))]
    urls = [dburl.database_url(u, f) for u, f in zip([database_url, *inbox_urls], flags, strict=True)]
    engines = [sa.create_engine(u, pool_size=jobs + 2) for u in urls]
    return engines[0], engines[1:]


def _schema(schema: str | None) -> str:
    from outbox.config import Settings

    return Settings(schema=schema).schema if schema else "outbox"


def _signing_key(sign: bool) -> bytes | None:
    key = cfg.hmac_key()
    if sign and key is None:
        raise ConfigError("--sign needs OUTBOX_REPORT_HMAC_KEY (at least 16 characters) in the environment")
    return key


def _load_ack_topic(topic: str, bootstrap: str | None, scratch_url: str | None, schema: str) -> sa.Engine:
    from alembic import command
    from alembic.util import CommandError

    from migrations import alembic_config
    from outbox.reconcile.acktopic import load

    if not bootstrap or not scratch_url:
        raise ConfigError("--ack-topic needs --bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS) and "
                          "--scratch-database-url (a database you may write)")
    try:
        command.upgrade(alembic_config(scratch_url, schema), "heads")
    except (CommandError, sa.exc.SQLAlchemyError) as exc:
        raise ReconcileError(f"could not migrate the scratch database: {exc}") from exc
    scratch = sa.create_engine(scratch_url)
    n = load(bootstrap, topic, scratch, schema)
    Console(stderr=True, highlight=False).print(f"loaded {n:,} acknowledgement records from {escape(topic)}")
    return scratch


def reconcile_command(  # noqa: PLR0917 - typer maps each parameter to a flag
    database_url: DbUrl,
    inbox_database_url: InboxUrls = None,
    schema: Schema = None,
    from_id: Annotated[int | None, typer.Option(help="First outbox id of the window.")] = None,
    to_id: Annotated[int | None, typer.Option(help="Last outbox id of the window.")] = None,
    since: Annotated[str | None, typer.Option(help="Events created at/after this ISO time or duration ago (2h).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Events created before this ISO time or duration ago.")] = None,
    grace: Annotated[float, typer.Option(help="Seconds: events published more recently are in flight.")] = 30.0,
    stuck_after: Annotated[float, typer.Option(help="Seconds: unpublished events older than this are stuck.")]
    = 300.0,
    group: Annotated[list[str] | None, typer.Option("--group", help="Only these consumer groups (repeatable).")]
    = None,
    format: Annotated[Format, typer.Option("--format", help="table (terminal) or json (stdout).")] = Format.TABLE,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the JSON report here.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Write a self-contained HTML report here.")] = None,
    sign: Annotated[bool, typer.Option("--sign", help="HMAC-sign with OUTBOX_REPORT_HMAC_KEY.")] = False,
    checkpoint: Annotated[bool, typer.Option(help="Record proven ranges in reconcile_checkpoint (operator role).")]
    = False,
    digest: Annotated[Digest, typer.Option(help="Row hash: hash (fast) or md5 (portable across platforms).")]
    = Digest.HASH,
    jobs: Annotated[int, typer.Option(help="Parallel database connections per side.")] = 4,
    cap: Annotated[int, typer.Option(help="Events named per kind and group (counts are always exact).")] = 100,
    ack_topic: Annotated[str | None, typer.Option(
        help="Read acknowledgements from this ack topic (when consumer databases are out of reach).")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(envvar="KAFKA_BOOTSTRAP_SERVERS",
                                                          help="Kafka, for --ack-topic.")] = None,
    scratch_database_url: Annotated[str | None, typer.Option(
        help="A database you may write, to load --ack-topic into (migrated automatically).")] = None,
) -> None:
    """Prove zero loss: every published event acknowledged once, in order, by every consumer group."""
    from outbox import reconcile as rc

    try:  # bad arguments: exit 2 before connecting (an empty window would otherwise be "proven")
        t0, t1 = cfg.parse_time(since, "--since"), cfg.parse_time(until, "--until")
        cfg.check_window(from_id, to_id, t0, t1)
        cfg.in_range(jobs, "--jobs", 1, cfg.MAX_JOBS)
        cfg.in_range(cap, "--cap", 0, cfg.MAX_CAP)
        options = rc.Options(from_id=from_id, to_id=to_id, since=t0, until=t1, grace=cfg.seconds(grace, "--grace"),
                             stuck_after=cfg.seconds(stuck_after, "--stuck-after"), groups=tuple(group or ()),
                             cap=cap, algorithm=digest.value, jobs=jobs, checkpoint=checkpoint)
        cfg.check_writable(output, "--output")
        cfg.check_writable(html, "--html")
        scratch = dburl.database_url(scratch_database_url, "--scratch-database-url") if scratch_database_url else None
        producer, inboxes = _engines(database_url, inbox_database_url or [], jobs)
    except (ConfigError, ReconcileError) as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    try:
        key = _signing_key(sign)
        sch = _schema(schema)
    except ConfigError as exc:
        raise fail(exc, EXIT_CONFIG) from None
    try:
        if ack_topic:
            inboxes.append(_load_ack_topic(ack_topic, bootstrap_servers, scratch, sch))
    except ConfigError as exc:
        raise fail(exc, EXIT_CONFIG) from None
    except (ReconcileError, OutboxError) as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    progress = RichProgress()
    try:
        report = rc.reconcile(producer, [rc.ConsumerDatabase(e, sch) for e in inboxes], options, schema=sch,
                              progress=progress)
    except (ReconcileError, OutboxError) as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    finally:
        progress.stop()
        producer.dispose()
        for e in inboxes:
            e.dispose()
    sealed = rc.seal(report.to_dict(), key if sign else None)
    text = json.dumps(sealed, indent=2, ensure_ascii=False)
    for path, body in ((output, text + "\n"), (html, rc.render_html(sealed) if html is not None else "")):
        try:
            if path is not None:
                path.write_text(body, encoding="utf-8")
        except OSError as exc:  # checked before the run, but a disk fills and a directory can go away meanwhile
            raise fail(ReconcileError(f"cannot write the report to {path}: {exc.strerror or exc} (the run ended: "
                                      f"{sealed['verdict_line']})"), EXIT_COULD_NOT_RUN) from None
    if format is Format.JSON:
        sys.stdout.write(text + "\n")
    else:
        written = [f"{what}: {path.resolve()}" for what, path in (("JSON report", output), ("HTML report", html))
                   if path is not None]
        rc.print_report(sealed, Console(highlight=False), before_verdict=written)
    raise typer.Exit(VERDICT_EXIT[report.verdict])


def _parse_report(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        why = ("not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else
               "nested too deeply" if isinstance(exc, RecursionError) else str(exc))
        raise ReconcileError(f"{what} is not a JSON report ({why})") from None
    if not isinstance(data, dict):
        raise ReconcileError(f"{what} is not a reconcile report (a JSON {type(data).__name__}, not an object)")
    return data


def _read_report(path: Path) -> tuple[dict[str, Any], str | None]:
    """The report's JSON form, and the page when ``path`` is an HTML report (which embeds the JSON form)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReconcileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"<"):  # JSON never starts with "<"
        return _parse_report(raw, str(path)), None
    from outbox.reconcile.html import embedded_json

    try:
        page = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ReconcileError(f"{path} is not an HTML report (not UTF-8 text)") from None
    embedded = embedded_json(page)
    if embedded is None:
        raise ReconcileError(f"{path} is not an HTML report written by `outbox reconcile --html` (it embeds no "
                             "single JSON report to verify)")
    return _parse_report(embedded, f"the JSON embedded in {path}"), page


def _page_line(path: Path, page: str, data: dict[str, Any]) -> tuple[bool, str]:
    """Whether the page around an HTML report's embedded JSON is intact, and the sentence that says what was found."""
    from outbox.reconcile.html import PageMatch, compare_page
    from outbox.version import VERSION

    match, written_by = compare_page(page, data)
    if match is PageMatch.SAME:
        return True, "the page is exactly what that JSON renders to"
    if match is PageMatch.EDITED:
        return False, (f"{path}: the page differs from what its embedded JSON renders to: its tables, charts or text "
                       "were changed outside the embedded JSON (which is what the hashes and signature cover)")
    return True, (f"the page itself was not compared (written by kafka-outbox {written_by or 'an unknown version'}, "
                  f"this is {VERSION}): only the embedded JSON is covered")


def verify_command(
    report: Annotated[Path, typer.Argument(help="A report written by `outbox reconcile`: the JSON (-o) or the HTML "
                                                "(--html), which embeds it.")],
) -> None:
    """Check a report's content hash and HMAC signature; any edit is detected (exit 1) and explained.

    For an HTML report: the JSON it embeds, and that the page is what that JSON renders to.
    """
    from outbox.reconcile import verify

    try:
        key = cfg.hmac_key()
    except ConfigError as exc:
        raise fail(exc, EXIT_CONFIG) from None
    try:  # a file that is not a report could not be verified (2); exit 1 is kept for a report that was edited
        data, page = _read_report(report)
        v = verify(data, key)
    except RecursionError:  # parsed, but too deep for the canonical form's encoder
        raise fail(ReconcileError(f"{report} is not a reconcile report (nested too deeply)"), EXIT_COULD_NOT_RUN) \
            from None
    except ReconcileError as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    con = Console(highlight=False)
    name = escape(str(report))
    what = "" if page is None else "embedded JSON report: "
    page_ok, page_says = _page_line(report, page, data) if page is not None and v.ok else (True, "")
    if v.ok and page_ok:
        how = "content hash and HMAC signature verified" if v.signed else "content hash verified (unsigned report)"
        how += f"; {page_says}" if page_says else ""
        con.print(f"[green]OK[/green]: {name}: {what}{how}; verdict was: "
                  f"{escape(str(data.get('verdict_line', '?')))}", soft_wrap=True)
        raise typer.Exit(EXIT_OK)
    for reason in v.reasons:
        con.print(f"[red]FAILED[/red]: {name}: {what}{escape(reason)}", soft_wrap=True)
    if not page_ok:
        con.print(f"[red]FAILED[/red]: {escape(page_says)}", soft_wrap=True)
    for check in v.checks:
        con.print(f"checked: {what}{escape(check)}", soft_wrap=True)
    if not page_ok:
        con.print("checked: the page (against what its embedded JSON renders to): DIFFERS", soft_wrap=True)
    raise typer.Exit(EXIT_COULD_NOT_RUN if v.missing_key else EXIT_FOUND)


def trace_command(
    event: Annotated[str, typer.Argument(help="An event id (UUID) or an outbox row id.")],
    database_url: DbUrl,
    inbox_database_url: InboxUrls = None,
    schema: Schema = None,
    format: Annotated[Format, typer.Option("--format", help="table or json")] = Format.TABLE,
) -> None:
    """Show one event's journey: written, published (partition/offset), acknowledged by which groups and when."""
    from outbox.reconcile import trace
    from outbox.reconcile.trace_view import print_journey
    from outbox.store import translate_errors

    try:
        cfg.check_trace_query(event)
        producer, inboxes = _engines(database_url, inbox_database_url or [], 1)
    except ConfigError as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    try:
        sch = _schema(schema)
    except ConfigError as exc:
        raise fail(exc, EXIT_CONFIG) from None
    try:
        with translate_errors("tracing"):  # unreachable is "could not run" (2), never "unknown event" (1)
            j = trace(event, producer, sch, [(e, sch) for e in inboxes])
    except OutboxError as exc:
        raise fail(exc, EXIT_COULD_NOT_RUN) from None
    finally:
        producer.dispose()
        for e in inboxes:
            e.dispose()
    if format is Format.JSON:
        sys.stdout.write(json.dumps({"query": j.query, "found": j.found, "event": j.event,
                                     "acknowledgements": list(j.acknowledgements)}, indent=2, default=str) + "\n")
    else:
        print_journey(j, Console(highlight=False))
    raise typer.Exit(EXIT_OK if j.found else EXIT_FOUND)


def register(app: typer.Typer) -> None:
    """Add ``reconcile``, ``verify`` and ``trace`` to ``app``."""
    app.command("reconcile")(reconcile_command)
    app.command("verify")(verify_command)
    app.command("trace")(trace_command)
