"""The wheel a stranger installs: built from this tree, installed into fresh virtual environments, and used from
outside the tree (``-I``, a temporary working directory; ``outbox.__file__`` must lie inside the venv).

* the core alone: ``import outbox``, an Event and the migrations work without any Kafka, CLI or metrics
  package, and what needs one says which extra to install;
* ``[audit]``: the auditor's commands run, ``outbox relay`` names the ``[relay]`` extra;
* ``[relay]``: ``outbox --version`` and the build-info metric.

Dependencies come from PyPI through pip's cache (warm after the first run). No database or broker is needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import outbox

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
# Never loaded by `import outbox`, an Event or OutboxMixin: the extras' modules.
EXTRAS_ONLY = ("confluent_kafka", "typer", "rich", "prometheus_client", "jsonschema", "tenacity", "pydantic",
               "opentelemetry")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], cwd=out)
    assert r.returncode == 0, r.stderr
    (built,) = out.glob("kafka_outbox-*.whl")
    return built


@pytest.fixture(scope="module")
def venvs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fresh venv per install: the core alone, ``[audit]``, ``[relay]``; installed side by side, since pip
    mostly waits on the index."""
    extras = ("core", "audit", "relay")
    with ThreadPoolExecutor(len(extras)) as pool:
        made = pool.map(lambda e: _venv(tmp_path_factory.mktemp(e), wheel, None if e == "core" else e), extras)
        return dict(zip(extras, made, strict=True))


def _venv(tmp: Path, wheel: Path, extra: str | None) -> Path:
    """A fresh venv (no pip of its own: the running pip installs into it) with the wheel and ``extra``."""
    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert r.returncode == 0, r.stderr
    spec = f"{wheel}[{extra}]" if extra else str(wheel)
    # --no-compile: byte-compiling every installed module would double the install time; imports compile lazily
    r = _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
              "--no-compile", "--disable-pip-version-check", spec], cwd=tmp)
    assert r.returncode == 0, r.stderr
    return venv


def _python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # -I: no PYTHONPATH, no user site, and neither the working directory nor this tree on sys.path
    return _run([str(venv / "bin" / "python"), "-I", "-c", textwrap.dedent(code)], cwd=cwd)


def test_the_wheel_ships_the_license_the_types_and_the_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    dist = f"kafka_outbox-{outbox.__version__}.dist-info"
    assert {f"{dist}/licenses/LICENSE", "outbox/py.typed", "relay/py.typed", "migrations/env.py"} <= names
    assert any(n.startswith("migrations/versions/relay_") for n in names)
    assert not any(n.startswith(("tests/", "stack/", "chaos/", "bench/", "demo/")) for n in names)


def test_the_core_alone_writes_events_and_names_the_extras(venvs: dict[str, Path], tmp_path: Path) -> None:
    venv = venvs["core"]
    r = _python(venv, f"""
        import json, sys
        from importlib import metadata
        from pathlib import Path

        import outbox
        from outbox.orm import OutboxMixin
        from migrations import versions_location

        event = outbox.Event(topic="orders", type="com.example.order.created", key="o-1", data={{"total": "9.90"}})
        missing = {{}}
        for feature in ("import outbox.inbox", "outbox.JsonSchemaRegistry({{}})"):
            try:
                exec(feature)
            except ModuleNotFoundError as exc:
                missing[feature] = str(exc)
        print(json.dumps({{
            "file": outbox.__file__, "version": outbox.__version__,
            "metadata": metadata.version("kafka-outbox"), "event": event.topic,
            "loaded": sorted(m for m in {EXTRAS_ONLY!r} if m in sys.modules),
            "migrations": sorted(p.name for p in Path(versions_location()).glob("*.py"))[:1],
            "missing": missing,
        }}))
    """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert Path(got["file"]).resolve().is_relative_to(venv.resolve()), got["file"]
    assert got["version"] == got["metadata"] == outbox.__version__
    assert got["event"] == "orders" and got["loaded"] == [] and got["migrations"] == ["0001_initial.py"]
    assert "pip install 'kafka-outbox[inbox]'" in got["missing"]["import outbox.inbox"]
    assert "pip install 'kafka-outbox[jsonschema]'" in got["missing"]["outbox.JsonSchemaRegistry({})"]

    r = _run([str(venv / "bin" / "outbox"), "--version"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "pip install 'kafka-outbox[relay]'" in r.stderr


def test_audit_extra_runs_the_auditors_commands(venvs: dict[str, Path], tmp_path: Path) -> None:
    venv = venvs["audit"]
    outbox_cmd = str(venv / "bin" / "outbox")
    r = _run([outbox_cmd, "verify", str(tmp_path / "no-such-report.json")], cwd=tmp_path)
    # the command ran (its imports, the reconciler's included, succeeded) and refused the missing file itself
    assert r.returncode == 2 and "pip install" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "no-such-report.json" in r.stderr + r.stdout
    r = _run([outbox_cmd, "relay"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "outbox relay:" in r.stderr and "pip install 'kafka-outbox[relay]'" in r.stderr


def test_relay_extra_prints_the_version_and_exports_build_info(venvs: dict[str, Path], tmp_path: Path) -> None:
    venv = venvs["relay"]
    r = _run([str(venv / "bin" / "outbox"), "--version"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"kafka-outbox {outbox.__version__}"
    r = _python(venv, """
        from prometheus_client import generate_latest
        import relay.metrics
        print(relay.metrics.__file__)
        print(next(l for l in generate_latest(relay.metrics.Metrics().registry).decode().splitlines()
                   if l.startswith("outbox_build_info")))
    """, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path, line = r.stdout.splitlines()
    assert Path(path).resolve().is_relative_to(venv.resolve())
    assert f'version="{outbox.__version__}"' in line and 'librdkafka="' in line and line.endswith(" 1.0")
