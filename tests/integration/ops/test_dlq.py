"""``outbox dlq``: each reason shown; retry keeps per-key order (held rows stay behind); discard releases."""

from __future__ import annotations

import json

import sqlalchemy as sa

import outbox
from outbox.schema import dead_letter
from outbox.store.relay import RelayStore
from tests.integration.ops.conftest import Cli, Db, uid


def _claim_all(db: Db) -> list[tuple[bytes | None, int | None]]:
    """What the relay's real claim would publish next, across all shards, in publication order per shard."""
    rs = RelayStore(db.engine)
    rows = [r for s in range(8) for r in rs.claim(s, 1000)]
    return [(r.key, r.key_seq) for r in sorted(rows, key=lambda r: r.id)]


def _dl(db: Db) -> list[sa.Row]:  # type: ignore[type-arg]
    with db.engine.connect() as conn:
        return list(conn.execute(sa.select(dead_letter).order_by(dead_letter.c.id)).all())


def test_list_and_show_give_the_reason_and_the_held_rows(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k", "k", "k", "j"])
    db.dead_letter(evs[0].id, reason="Broker: Message size too large (10485760 > 1048588)")
    assert _claim_all(db) == [(b"j", 1)], "the dead key is held: its later rows wait"

    res = cli("dlq", "list", "--format", "json", url=db.url)
    assert res.exit_code == 0, res.output
    (doc,) = json.loads(res.stdout)
    alias = cli("dlq", "list", "--json", url=db.url)  # the earlier spelling: deprecated, same output
    assert alias.exit_code == 0 and json.loads(alias.stdout) == [doc] and "deprecated" in alias.stderr
    assert doc["reason"].startswith("Broker: Message size too large") and doc["error_class"] == "PermanentPublishError"
    assert doc["held_behind"] == 2 and doc["key"] == "k" and doc["key_seq"] == 1 and doc["resolution"] is None

    table = cli("dlq", "list", url=db.url)
    assert table.exit_code == 0 and "Message size too large" in table.stdout and str(evs[0].event_id) in table.stdout

    shown = cli("dlq", "show", str(doc["id"]), "--format", "json", url=db.url)
    assert shown.exit_code == 0, shown.output
    d = json.loads(shown.stdout)
    assert d["detail"]["last_error"].startswith("Broker: Message size too large")
    assert d["detail"]["payload_bytes"] > 0 and d["detail"]["dead_at"] is not None
    assert cli("dlq", "show", "999999", url=db.url).exit_code == 1


def test_retry_publishes_the_row_first_then_the_held_rows_in_order(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k", "j", "k", "k"])
    db.dead_letter(evs[0].id)
    assert _claim_all(db) == [(b"j", 1)]
    (dl,) = _dl(db)

    res = cli("dlq", "retry", str(dl.id), "--actor", "carol", url=db.url)
    assert res.exit_code == 0 and "retried" in res.stdout, res.output
    assert _claim_all(db) == [(b"k", 1), (b"j", 1), (b"k", 2), (b"k", 3)]
    row = db.row(evs[0].id)
    assert row.dead_at is None and row.attempts == 0 and row.last_error is None
    (dl,) = _dl(db)
    assert (dl.resolution, dl.resolved_by) == ("retried", "carol") and dl.resolved_at is not None

    again = cli("dlq", "retry", str(dl.id), "999999", url=db.url)
    assert again.exit_code == 1
    assert "already resolved" in again.stdout and "not found" in again.stdout
    assert cli("dlq", "list", "--format", "json", url=db.url).stdout.strip() == "[]"
    assert len(json.loads(cli("dlq", "list", "--all", "--format", "json", url=db.url).stdout)) == 1


def test_discard_releases_the_key_and_keeps_the_row_dead(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k", "k", "k"])
    db.dead_letter(evs[0].id)
    (dl,) = _dl(db)
    res = cli("dlq", "discard", str(dl.id), url=db.url)
    assert res.exit_code == 0 and "discarded" in res.stdout, res.output
    assert _claim_all(db) == [(b"k", 2), (b"k", 3)]
    assert db.row(evs[0].id).dead_at is not None, "a discarded event is never published"
    (dl,) = _dl(db)
    assert dl.resolution == "discarded" and dl.resolved_by


def test_a_retried_row_that_fails_again_is_dead_lettered_again_and_holds_its_key(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k", "k", "k"])
    db.dead_letter(evs[0].id)
    (first,) = _dl(db)
    assert cli("dlq", "retry", str(first.id), url=db.url).exit_code == 0
    db.dead_letter(evs[0].id, reason="failed again")  # the retried row fails again
    # It must be visible in the DLQ with its new reason, and its key held again: k2, k3 must not overtake k1.
    assert _claim_all(db) == []
    (dl,) = _dl(db)
    assert dl.resolved_at is None and dl.reason == "failed again"


def test_retry_after_a_shard_count_change_requeues_into_the_keys_shard_now(db: Db, cli: Cli) -> None:
    # Written under 8 shards, retried after writers and relays moved to 3: the row must join its key's newer
    # rows in their shard (one publisher, id order), not go back to a shard no relay owns or a second publisher.
    topic = f"t-{uid()}"
    (ev,) = db.write(topic, ["moved"])
    db.dead_letter(ev.id)
    (dl,) = _dl(db)
    want = outbox.shard_for(topic, b"moved", ev.event_id, 3)
    assert db.row(ev.id).shard == outbox.shard_for(topic, b"moved", ev.event_id, 8)
    res = cli("dlq", "retry", str(dl.id), "--shards", "3", url=db.url)
    assert res.exit_code == 0, res.output
    assert db.row(ev.id).shard == want


def test_the_largest_bigint_id_is_looked_up_not_a_database_error(db: Db, cli: Cli) -> None:
    top = str(2**63 - 1)  # the CLI's upper bound: one more is a usage error (tests/unit/ops/test_cli_bad_input.py)
    res = cli("dlq", "show", top, url=db.url)
    assert res.exit_code == 1 and f"dead letter {top} not found" in res.stdout, res.output
    res = cli("dlq", "discard", top, url=db.url)
    assert res.exit_code == 1 and "not found" in res.stdout, res.output
    res = cli("dlq", "list", "--limit", "100000", url=db.url)
    assert res.exit_code == 0, res.output
