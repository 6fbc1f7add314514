"""`outbox verify` takes the HTML report too, and every verdict says exactly what was checked and what failed.

The HTML report embeds the signed JSON and is rendered from it alone: verify checks the embedded JSON's hashes
and signature, then that the page is what that JSON renders to. Pure: no Postgres or Kafka.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from outbox.reconcile import render_html, seal
from outbox.reconcile.html import PageMatch, compare_page, embedded_json
from relay.cli import app
from tests.unit.audit.test_views import group, report

KEY = "a-sixteen-char-key!"
runner = CliRunner()


def verify(path: Path, key: str = KEY) -> tuple[int, str]:
    res = runner.invoke(app, ["verify", str(path)], env={"COLUMNS": "250", "OUTBOX_REPORT_HMAC_KEY": key})
    return res.exit_code, res.output


def sealed() -> dict[str, Any]:
    return seal(report(group("billing"), group("shipping")), KEY.encode())


def test_the_page_embeds_its_report_and_is_rendered_from_it_alone() -> None:
    d = sealed()
    page = render_html(d)
    text = embedded_json(page)
    assert text is not None and json.loads(text) == d
    assert compare_page(page, d)[0] is PageMatch.SAME
    assert compare_page(page.replace(">10,000<", ">9,999<", 1), d)[0] is PageMatch.EDITED
    old = page.replace('content="kafka-outbox ', 'content="kafka-outbox 0.0.1-old', 1)
    assert compare_page(old, d)[0] is PageMatch.NOT_COMPARED and str(compare_page(old, d)[1]).startswith("0.0.1-old")
    assert embedded_json(page + page) is None, "two embedded reports: which one would the page show?"


def test_verify_accepts_the_html_report(tmp_path: Path) -> None:
    f = tmp_path / "report.html"
    f.write_text(render_html(sealed()), encoding="utf-8")
    code, out = verify(f)
    assert code == 0, out
    assert out.startswith(f"OK: {f}: embedded JSON report: content hash and HMAC signature verified; the page is "
                          "exactly what that JSON renders to; verdict was: verdict: zero loss proven"), out


def test_an_edit_to_the_visible_page_is_caught(tmp_path: Path) -> None:
    f = tmp_path / "report.html"
    f.write_text(render_html(sealed()).replace(">10,000<", ">9,999<", 1), encoding="utf-8")
    code, out = verify(f)
    assert code == 1, out
    assert f"FAILED: {f}: the page differs from what its embedded JSON renders to" in out, out
    assert "checked: embedded JSON report: content hash (SHA-256 of the report without its integrity block, against " \
           "the stored one): matches" in out, out
    assert out.strip().splitlines()[-1] == "checked: the page (against what its embedded JSON renders to): DIFFERS"


def test_an_edit_to_the_embedded_json_is_caught_and_named(tmp_path: Path) -> None:
    page = render_html(sealed())
    f = tmp_path / "report.html"
    f.write_text(page.replace("&quot;missing&quot;: 0", "&quot;missing&quot;: 1", 1), encoding="utf-8")
    code, out = verify(f)
    assert code == 1, out
    assert f"FAILED: {f}: embedded JSON report: content hash mismatch: the report was changed after it was " \
           "written; edited section(s): groups[billing]" in out, out
    assert "recomputed" not in out, "nothing was recomputed: the hashes are the original ones"


def test_a_page_of_another_version_verifies_its_json_and_says_the_page_was_not_compared(tmp_path: Path) -> None:
    # A page written before the generator tag (and the id on its <pre>) existed, by an older renderer.
    d = sealed()
    page = render_html(d).replace('<pre id="report-json">', "<pre>")
    page = page.split("\n", 2)[0] + "\n" + page.split("\n", 2)[2]  # drop the generator line
    f = tmp_path / "old.html"
    f.write_text(page.replace("<h1>", "<h1 class=old>"), encoding="utf-8")
    code, out = verify(f)
    assert code == 0, out
    assert "embedded JSON report: content hash and HMAC signature verified; the page itself was not compared " \
           "(written by kafka-outbox an unknown version" in out and "only the embedded JSON is covered" in out, out


def test_an_html_file_that_is_not_a_report_could_not_verify(tmp_path: Path) -> None:
    f = tmp_path / "page.html"
    f.write_text("<!doctype html><html><body><p>hello</p></body></html>", encoding="utf-8")
    code, out = verify(f)
    assert code == 2, out
    assert f"{f} is not an HTML report written by `outbox reconcile --html` (it embeds no single JSON report to " \
           "verify)" in out.replace("\n", ""), out
    page = render_html(sealed())
    f.write_text(page.replace('<pre id="report-json">{', '<pre id="report-json">[', 1), encoding="utf-8")
    code, out = verify(f)
    assert code == 2 and f"the JSON embedded in {f} is not a JSON report (" in out.replace("\n", ""), out


def test_a_signed_html_report_without_the_key_could_not_verify(tmp_path: Path) -> None:
    f = tmp_path / "report.html"
    f.write_text(render_html(sealed()), encoding="utf-8")
    code, out = verify(f, key="")
    assert code == 2 and "embedded JSON report: the report is signed but no key is configured" in out, out
    assert "checked: embedded JSON report: HMAC-SHA256 signature (of the content under OUTBOX_REPORT_HMAC_KEY, " \
           "against the stored one): not checked: the report is signed, and no key is configured" in out, out


def test_a_tampered_json_report_says_what_was_checked_and_what_failed(tmp_path: Path) -> None:
    d = copy.deepcopy(sealed())
    d["groups"][0]["missing"] = 1
    f = tmp_path / "edited.json"
    f.write_text(json.dumps(d), encoding="utf-8")
    code, out = verify(f)
    assert code == 1, out
    lines = out.strip().splitlines()
    assert lines == [
        f"FAILED: {f}: content hash mismatch: the report was changed after it was written; edited section(s): "
        "groups[billing]",
        f"FAILED: {f}: signature mismatch: the content was changed after signing (its HMAC under your key differs "
        "from the stored signature)",
        "checked: content hash (SHA-256 of the report without its integrity block, against the stored one): "
        "MISMATCH",
        "checked: HMAC-SHA256 signature (of the content under OUTBOX_REPORT_HMAC_KEY, against the stored one): "
        "MISMATCH",
    ], out
