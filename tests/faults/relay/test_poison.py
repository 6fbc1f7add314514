"""A record the broker refuses (larger than the topic's max.message.bytes) goes to the DLQ with its reason after
bounded attempts; only its key is held (its later rows wait, in order); every other key keeps flowing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

import outbox
from stack.process import REPO_ROOT
from tests.conftest import create_topic
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, scalar, verify, wait_until, write_events

OUTBOX_CLI = str(Path(sys.executable).parent / "outbox")


def test_poison_row_is_dead_lettered_and_only_its_key_is_held(
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str,
        tmp_path: Path) -> None:
    topic = f"small-{os.getpid()}-{tmp_path.name[-6:]}"
    create_topic(bootstrap, topic, partitions=3, config={"max.message.bytes": "20000"})
    write_events(fresh_db, topic, 100, keys=10)
    eng = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
    with eng.begin() as c:  # key "poison": a fine row, the poison (incompressible 60 kB), two rows behind it
        outbox.enqueue(c, *[outbox.Event(topic=topic, type="p", key="poison", data=d,
                                         content_type="application/octet-stream")
                            for d in (b"ok-before", os.urandom(60_000), b"held-1", b"held-2")])
    eng.dispose()
    write_events(fresh_db, topic, 100, keys=10, key_prefix="after")
    r = spawn(relays, relay_env, tmp_path, "relay", OUTBOX_RELAY_MAX_ATTEMPTS="3")

    def settled() -> bool:
        return scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE published_at IS NULL "
                                "AND dead_at IS NULL AND key <> 'poison'") == 0 and \
            scalar(fresh_db, "SELECT count(*) FROM outbox.dead_letter") == 1
    wait_until(settled, 90, lambda: f"the poison row to be dead-lettered and the rest published\n{r.logs()}")

    reason = str(scalar(fresh_db, "SELECT reason || ' / ' || attempts FROM outbox.dead_letter"))
    assert "TOO_LARGE" in reason and reason.endswith("/ 3"), reason
    states = scalar(fresh_db, "SELECT string_agg(CASE WHEN published_at IS NOT NULL THEN 'P' WHEN dead_at IS NOT "
                              "NULL THEN 'D' ELSE '-' END, '' ORDER BY key_seq) FROM outbox.event WHERE key='poison'")
    assert states == "PD--", "before it published, the poison dead, the two behind it held in order"
    innocent = scalar(fresh_db, "SELECT count(*) FROM outbox.event WHERE attempts > 0 AND dead_at IS NULL")
    assert innocent == 0, "rows refused only as batch-mates of the poison were never charged an attempt"
    wait_until(lambda: "outbox_relay_held_keys 1.0" in r.metrics(), 10, "the held key in /metrics")
    assert "outbox_relay_dead_letters 1.0" in r.metrics()

    out = subprocess.run([OUTBOX_CLI, "status", "--format", "json"], cwd=REPO_ROOT,
                         env={**os.environ, **relay_env}, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["dead_letters_open"] == 1 and st["held_keys"][0]["key"] == "poison" and st["pending"] == 2
    table = subprocess.run([OUTBOX_CLI, "status"], cwd=REPO_ROOT, capture_output=True,
                           env={**os.environ, **relay_env, "COLUMNS": "160"}, text=True, timeout=60, check=False)
    assert table.returncode == 0 and "held keys: 1" in table.stdout and "poison" in table.stdout, table.stdout

    assert r.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic], expect_all_published=False)
    assert v.clean and v.seen == 201, str(v)
