"""``outbox status`` flags pending rows in shards no relay claims (shard >= OUTBOX_SHARDS), and shows the
version each relay instance runs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from typer.testing import CliRunner

import outbox
from migrations import alembic_config
from outbox.store.relay import RelayStore
from relay.cli import app
from tests.integration.relay.harness import dsn, scalar, write_events


@pytest.fixture
def eight_shard_rows(fresh_db: str) -> Iterator[str]:
    """A database with pending rows written at OUTBOX_SHARDS=8, some of them in shards 4..7."""
    outbox.configure(shards=8)
    try:
        write_events(fresh_db, "orders", 48, keys=48)
    finally:
        outbox.configure()
    yield fresh_db


def _beyond_4(url: str) -> tuple[int, int]:
    """Rows in shards >= 4 (all pending here), and the highest shard."""
    with psycopg.connect(dsn(url)) as c:
        row = c.execute("SELECT count(*) FILTER (WHERE shard >= 4), max(shard) FROM outbox.event").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_store_counts_pending_rows_beyond_the_shard_count(eight_shard_rows: str) -> None:
    url = eight_shard_rows
    n, top = _beyond_4(url)
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        store = RelayStore(eng)
        s = store.stranded(4)
        assert (s.shards, s.pending, s.highest_shard) == (4, n, top) and n > 0
        assert store.stranded(8).pending == 0 and store.stranded(8).highest_shard is None
        scalar(url, "UPDATE outbox.event SET published_at = now() WHERE shard >= 4 RETURNING 1")
        assert store.stranded(4).pending == 0
    finally:
        eng.dispose()


def test_status_flags_stranded_shards(eight_shard_rows: str) -> None:
    url = eight_shard_rows
    n, top = _beyond_4(url)
    run = CliRunner().invoke

    res = run(app, ["status", "--database-url", url, "--shards", "4", "--format", "json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["shards"] == 4 and st["pending"] == 48
    assert st["stranded"]["pending"] == n and max(st["stranded"]["shards"]) == top
    assert min(st["stranded"]["shards"]) >= 4

    res = run(app, ["status", "--database-url", url, "--shards", "4"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert f"stranded: {n} pending rows in shards >= OUTBOX_SHARDS=4 (highest shard {top})" in res.output
    assert "not claimed: >= OUTBOX_SHARDS=4" in res.output

    res = run(app, ["status", "--database-url", url, "--format", "json"])  # default OUTBOX_SHARDS=8
    assert res.exit_code == 0 and json.loads(res.output)["stranded"] == {"pending": 0, "shards": []}, res.output


def test_backlog_gauges_count_exactly_up_to_the_cap_and_estimate_beyond(fresh_db: str) -> None:
    write_events(fresh_db, "orders", 300, keys=1)  # one key: one shard, dense ids
    write_events(fresh_db, "orders", 40, keys=1, key_prefix="x")
    store = RelayStore(sa.create_engine(fresh_db))
    exact = {b.shard: b for b in store.backlog()}
    small = {b.shard: b for b in store.backlog_gauges(list(range(8)), exact_up_to=1000)}
    assert {s: b.pending for s, b in small.items()} == {s: b.pending for s, b in exact.items()}
    capped = {b.shard: b for b in store.backlog_gauges(list(range(8)), exact_up_to=50)}
    for s, b in exact.items():
        assert abs(capped[s].pending - b.pending) <= 0.2 * b.pending, (s, capped[s], b)
        assert capped[s].oldest_age_s is not None and b.oldest_age_s is not None
        assert capped[s].oldest_age_s >= b.oldest_age_s - 1.0
    store.engine.dispose()


def test_status_shows_the_version_of_each_relay(fresh_db: str) -> None:
    """Each relay records its version with its heartbeat; a relay of an earlier build records none ("unknown").
    An upgrade that must outlive the old relays waits until only the new version is live (docs/operations.md)."""
    url = fresh_db
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    store = RelayStore(eng)
    run = CliRunner().invoke
    try:
        store.heartbeat("new-1", "host-a", 11, 30)
        # what a relay of an earlier build writes: no version column in its INSERT
        scalar(url, "INSERT INTO outbox.relay_instance (instance_id, host, pid) VALUES ('old-1', 'host-b', 22) "
                    "RETURNING 1")
        scalar(url, "INSERT INTO outbox.relay_instance (instance_id, host, pid, heartbeat_at, version) "
                    "VALUES ('gone-1', 'host-c', 33, now() - interval '5 minutes', '0.0.1') RETURNING 1")

        res = run(app, ["status", "--database-url", url, "--format", "json"])
        assert res.exit_code == 0, res.output
        st = json.loads(res.output)
        assert {i["instance_id"]: (i["version"], i["live"], i["pid"]) for i in st["instances"]} == {
            "new-1": (outbox.__version__, True, 11), "old-1": (None, True, 22), "gone-1": ("0.0.1", False, 33)}
        assert st["relay_versions"] == {outbox.__version__: 1, "unknown": 1}

        res = run(app, ["status", "--database-url", url], env={"COLUMNS": "250"})
        assert res.exit_code == 0, res.output
        assert "relay instances" in res.output and "(gone)" in res.output
        assert f"live instances: 2 (versions: {outbox.__version__} x1, unknown x1)" in res.output

        # the old relay's instance id restarted under the new build: its row follows the process
        store.heartbeat("old-1", "host-b", 23, 30)
        st = json.loads(run(app, ["status", "--database-url", url, "--format", "json"]).output)
        assert st["relay_versions"] == {outbox.__version__: 2}
        assert [i["pid"] for i in st["instances"] if i["instance_id"] == "old-1"] == [23]

        # a schema from before relay_0005 (checked before migrating): instances still listed, versions unknown
        command.downgrade(alembic_config(url), "relay_0004")
        res = run(app, ["status", "--database-url", url, "--format", "json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["relay_versions"] == {"unknown": 2}
    finally:
        eng.dispose()
