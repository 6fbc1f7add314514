"""The chaos report's relay-log story: only the named shard's ownership/recovery/error lines, in time order."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from chaos.forensics import _story


def _line(ts: str, msg: str, **extra: object) -> str:
    return json.dumps({"ts": f"2026-12-01T{ts}Z", "level": "INFO", "logger": "relay.worker", "msg": msg, **extra})


def test_story_keeps_the_shards_lines_in_the_window_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "relay0.log").write_text("\n".join([
        _line("10:00:05.000", "shard acquired", shard=0, epoch=2),
        _line("10:00:01.000", "relay started", instance="r0"),
        _line("10:00:06.000", "shard acquired", shard=1, epoch=2),  # another shard
        _line("10:00:07.000", "GETPID retrying"),  # librdkafka chatter
        "not json",
        _line("10:05:00.000", "recovery: the shard has no checkpoint", shard=0),  # outside the window
    ]))
    (tmp_path / "relay1.log").write_text(_line("10:00:03.000", "transient failure, retrying", shard=0, error="db"))
    lo, hi = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC), datetime(2026, 12, 1, 10, 1, 0, tzinfo=UTC)
    story = _story(tmp_path, 0, lo, hi)
    assert [s.split(": ", 1)[1].split(" {")[0] for s in story] == [
        "relay started", "transient failure, retrying", "shard acquired"]
    assert story[1].startswith("  10:00:03.000 relay1:")
