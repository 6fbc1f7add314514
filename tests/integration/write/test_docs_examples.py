"""Every ```python block of docs/write-side.md runs, in order, against a fresh database."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import outbox

DOC = Path(__file__).resolve().parents[3] / "docs" / "write-side.md"


@pytest.fixture
def restore_settings() -> Iterator[None]:
    yield
    outbox.configure()


def test_write_side_examples_run(fresh_db: str, restore_settings: None) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 6
    # A real module, because SQLAlchemy resolves Mapped[...] annotations through sys.modules.
    module = types.ModuleType("docs_write_side_example")
    module.DATABASE_URL = fresh_db  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"{DOC.name}[block {i}]", "exec"), module.__dict__)
            except Exception as exc:
                raise AssertionError(f"docs example block {i} failed:\n{block}") from exc
    finally:
        del sys.modules[module.__name__]
        engine = module.__dict__.get("engine")
        if engine is not None:
            engine.dispose()
