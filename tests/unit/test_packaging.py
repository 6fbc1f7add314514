"""What the distribution declares is true: one version, real classifiers, extras that match what each part
imports, and a core that imports none of them. (tests/integration/test_wheel.py proves it on a built wheel.)"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import trove_classifiers
from typer.testing import CliRunner

import outbox
from outbox.extras import DISTRIBUTION, OPTIONAL_MODULES
from relay.cli import app
from relay.console import AUDIT_COMMANDS, missing_message

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# What `import outbox`, an Event and enqueue must never load (the core is for writers).
NOT_IN_THE_CORE = ("confluent_kafka", "typer", "rich", "prometheus_client", "jsonschema", "tenacity",
                   "pydantic", "relay")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_version_is_the_distributions() -> None:
    assert outbox.__version__ == metadata.version(DISTRIBUTION) == PROJECT["version"]


def test_outbox_version_flag() -> None:
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"kafka-outbox {outbox.__version__}"


def test_classifiers_are_real() -> None:
    assert PROJECT["classifiers"], "no classifiers"
    assert [c for c in PROJECT["classifiers"] if c not in trove_classifiers.classifiers] == []


def test_the_core_depends_on_what_writers_need_only() -> None:
    names = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in PROJECT["dependencies"]}
    assert names == {"sqlalchemy", "psycopg", "alembic", "uuid-utils"}
    assert not any("psycopg[" in r for r in PROJECT["dependencies"]), "applications choose psycopg's build"


def test_every_optional_module_comes_with_an_extra() -> None:
    """OPTIONAL_MODULES (what the console script and the lazy imports name an extra for) matches the extras."""
    dists = metadata.packages_distributions()
    extra_dists = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-")
                   for name, reqs in PROJECT["optional-dependencies"].items() if name not in ("dev", "binary")
                   for r in reqs}
    for module in OPTIONAL_MODULES:
        provided = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert provided & extra_dists, f"{module} ({provided}) is in no extra"
    core = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in PROJECT["dependencies"]}
    assert not (extra_dists & core)
    dev = PROJECT["optional-dependencies"]["dev"][0]
    assert dev == f"{DISTRIBUTION}[{','.join(n for n in PROJECT['optional-dependencies'] if n != 'dev')}]"


def test_importing_outbox_and_writing_loads_no_extra() -> None:
    """In this (full) environment too: nothing optional is imported before a feature asks for it."""
    r = _run("import sys, outbox\n"
             "from outbox.write import _write\n"
             "e = outbox.Event(topic='orders', type='t', key='k', data={'a': 1})\n"
             "outbox.OutboxMixin\n"
             f"print(sorted(m for m in {NOT_IN_THE_CORE!r} if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def _without(modules: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` where importing any of ``modules`` fails as if it were not installed."""
    block = "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return _run(f"import sys\n{block}{code}")


def test_a_feature_names_its_extra() -> None:
    r = _without(("confluent_kafka",), "import outbox.inbox")
    assert "ModuleNotFoundError" in r.stderr and "pip install 'kafka-outbox[inbox]'" in r.stderr, r.stderr
    r = _without(("jsonschema",), "import outbox\noutbox.JsonSchemaRegistry({})")
    assert "pip install 'kafka-outbox[jsonschema]'" in r.stderr, r.stderr
    r = _without(("rich",), "import outbox.reconcile")
    assert "pip install 'kafka-outbox[audit]'" in r.stderr, r.stderr
    r = _without(("opentelemetry",), "import outbox.write as w\nprint(w.current_traceparent())")
    assert r.returncode == 0 and r.stdout.strip() == "None", r.stderr


def test_the_console_script_names_the_extra_and_exits_2() -> None:
    main = "sys.argv = ['outbox', *{args!r}]\nfrom relay.console import main\nmain()"
    r = _without(("typer",), main.format(args=["--version"]))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'kafka-outbox[relay]'" in r.stderr and "'typer'" in r.stderr
    r = _without(("typer",), main.format(args=["verify", "report.json"]))
    assert r.returncode == 2 and "outbox verify:" in r.stderr and "kafka-outbox[audit]" in r.stderr, r.stderr
    # a command whose deferred imports need more than the command line (outbox relay without [relay])
    r = _without(("pydantic_settings", "prometheus_client"), main.format(args=["relay"]))
    assert r.returncode == 2 and "outbox relay:" in r.stderr and "kafka-outbox[relay]" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_a_missing_module_of_no_extra_is_a_bug_and_keeps_its_traceback() -> None:
    r = _without(("sqlalchemy",), "sys.argv = ['outbox', '--version']\nfrom relay.console import main\nmain()")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_missing_message() -> None:
    exc = ModuleNotFoundError("No module named 'rich'", name="rich")
    assert missing_message(exc, ["reconcile", "--html", "x"]) == (
        "outbox reconcile: the module 'rich' is not installed; this command comes with the [audit] extra: "
        "pip install 'kafka-outbox[audit]'")
    assert "[relay] extra" in missing_message(exc, ["dlq", "list"])
    assert {c.name for c in app.registered_commands} >= AUDIT_COMMANDS
