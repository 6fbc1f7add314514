"""``outbox replay``: same rows, same event ids, re-queued in batches, audited; dry run changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

import outbox
from outbox.schema import replay_audit
from outbox.store import ops
from outbox.store.relay import RelayStore
from tests.integration.ops.conftest import Cli, Db, uid


def _audits(db: Db) -> list[sa.Row]:  # type: ignore[type-arg]
    with db.engine.connect() as conn:
        return list(conn.execute(sa.select(replay_audit).order_by(replay_audit.c.id)).all())


def test_replay_requeues_the_same_rows_in_batches_and_audits(db: Db, cli: Cli) -> None:
    topic = f"orders-{uid()}"
    evs = db.write(topic, ["a", "b", "a", "c", "a", "b", None])
    db.publish([e.id for e in evs[:6]])  # the last one is still pending
    before = {r.id: r for r in db.rows()}

    res = cli("replay", "--from-id", str(evs[1].id), "--to-id", str(evs[6].id), "--batch-size", "2",
              "--actor", "alice", url=db.url)
    assert res.exit_code == 0, res.output
    assert "re-queued 5 events" in res.stdout
    assert "1 still pending" in res.stdout

    after = {r.id: r for r in db.rows()}
    assert set(after) == set(before), "replay adds and removes no rows"
    for e in evs[1:6]:
        r = after[e.id]
        assert (r.published_at, r.kafka_partition, r.kafka_offset, r.relay_epoch) == (None, None, None, None)
        assert r.event_id == before[e.id].event_id and r.payload == before[e.id].payload
        assert r.key_seq == before[e.id].key_seq
    assert after[evs[0].id].published_at is not None, "outside the range: untouched"

    (audit,) = _audits(db)
    assert audit.actor == "alice" and audit.event_count == 5
    assert audit.selector["selector"] == {"id_from": evs[1].id, "id_to": evs[6].id}
    assert audit.selector["replayed_id_ranges"] == [[evs[1].id, evs[5].id]]

    # The relay's own claim now returns them again: the relay publishes them like new rows, key order intact.
    claimed = [r for s in range(8) for r in RelayStore(db.engine).claim(s, 100)]
    by_key: dict[bytes | None, list[int]] = {}
    for r in sorted(claimed, key=lambda r: r.id):
        by_key.setdefault(r.key, []).append(r.key_seq or 0)
    assert by_key[b"a"] == [2, 3] and by_key[b"b"] == [1, 2] and by_key[b"c"] == [1]


def test_dry_run_changes_nothing_and_writes_no_audit(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k1", "k2", "k3"])
    db.publish([e.id for e in evs])
    res = cli("replay", "--topic", topic, "--dry-run", url=db.url)
    assert res.exit_code == 0, res.output
    assert "replayable (published) rows: 3" in res.stdout and "dry run: nothing changed" in res.stdout
    assert str(evs[0].event_id) in res.stdout
    assert all(r.published_at is not None for r in db.rows())
    assert _audits(db) == []


def test_selectors_event_ids_time_window_and_topic_are_anded(db: Db) -> None:
    t1, t2 = f"t1-{uid()}", f"t2-{uid()}"
    a = db.write(t1, ["x", "y", "z"])
    b = db.write(t2, ["x"])
    db.publish([e.id for e in (*a, *b)])
    with db.engine.begin() as conn:
        # Back-date the first row so the time window can leave it out.
        conn.execute(sa.text("UPDATE outbox.event SET created_at = now() - interval '2 hours' WHERE id = :i"),
                     {"i": a[0].id})
    now = datetime.now(UTC)
    cases = {
        ops.ReplaySelector(event_ids=(a[1].event_id, b[0].event_id)): {a[1].id, b[0].id},
        ops.ReplaySelector(topic=t1): {e.id for e in a},
        ops.ReplaySelector(topic=t1, since=now - timedelta(hours=1)): {a[1].id, a[2].id},
        ops.ReplaySelector(until=now - timedelta(hours=1)): {a[0].id},
        ops.ReplaySelector(topic=t2, event_ids=(a[1].event_id,)): set(),
    }
    with db.engine.connect() as conn:
        for sel, want in cases.items():
            got = {e.id for e in ops.replay_sample(conn, sel, limit=100)}
            assert got == want, sel
            assert ops.replay_plan(conn, sel).replayable == len(want)


def test_since_and_until_take_a_duration_ago_as_reconcile_does(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["x", "y", "z"])
    db.publish([e.id for e in evs])
    with db.engine.begin() as conn:  # written two hours ago: outside --since 1h, inside --until 1h
        conn.execute(sa.text("UPDATE outbox.event SET created_at = now() - interval '2 hours' WHERE id = :i"),
                     {"i": evs[0].id})
    res = cli("replay", "--topic", topic, "--since", "1h", "--dry-run", url=db.url)
    assert res.exit_code == 0, res.output
    assert "replayable (published) rows: 2" in res.stdout and str(evs[0].event_id) not in res.stdout
    res = cli("replay", "--topic", topic, "--since", "3h", "--until", "1h", url=db.url)
    assert res.exit_code == 0 and "re-queued 1 events" in res.stdout, res.output
    assert db.row(evs[0].id).published_at is None and db.row(evs[1].id).published_at is not None


def test_pending_and_dead_rows_are_never_replayed(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, ["k", "k", "m"])
    db.dead_letter(evs[2].id)
    res = cli("replay", "--topic", topic, url=db.url)
    assert res.exit_code == 0 and "nothing to replay" in res.stdout
    assert "2 still pending, 1 dead-lettered" in res.stdout
    assert db.row(evs[2].id).dead_at is not None


def test_interrupted_replay_is_still_audited_with_what_was_done(db: Db) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, [f"k{i}" for i in range(5)])
    db.publish([e.id for e in evs])
    sel = ops.ReplaySelector(topic=topic)
    with db.engine.begin() as conn:
        audit_id = ops.start_replay_audit(conn, "bob", sel)
    with db.engine.begin() as conn:
        done = ops.replay_batch(conn, sel, audit_id, 0, 2, shards=8)
    # ... the process dies here: the audit says exactly what was committed
    (audit,) = _audits(db)
    assert audit.event_count == 2 and audit.selector["replayed_id_ranges"] == [[done[0], done[1]]]
    with db.engine.connect() as conn:
        assert ops.replayed_ranges(conn, evs[1].id, evs[4].id) == [(done[0], done[1], audit_id)]
        assert ops.replayed_ranges(conn, evs[3].id, evs[4].id) == []


def test_replay_needs_a_selector_and_valid_ids(db: Db, cli: Cli) -> None:
    res = cli("replay", url=db.url)
    assert res.exit_code == 2 and "give at least one" in res.output
    res = cli("replay", "--event-id", "nope", url=db.url)
    assert res.exit_code == 2 and "UUID" in res.output
    res = cli("replay", "--since", "yesterday", url=db.url)
    said = " ".join(res.output.replace("│", " ").split())  # typer draws the error in a box, wrapped
    assert res.exit_code == 2 and "--since: expected an ISO time (2026-11-01T00:00:00Z) or a duration ago like 2h, " \
        "got 'yesterday'" in said, res.output


def test_unreachable_database_exits_2_without_leaking_the_password(cli: Cli) -> None:
    res = cli("replay", "--topic", "x", url="postgresql+psycopg://app:Hunter2Secret@127.0.0.1:1/outbox")
    assert res.exit_code == 2
    assert "Hunter2Secret" not in res.output
    assert "error:" in res.output


def test_replay_requeues_into_each_keys_shard_under_the_count_in_use_now(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    evs = db.write(topic, [f"k{i}" for i in range(20)] + [None])
    db.publish([e.id for e in evs])
    res = cli("replay", "--topic", topic, "--shards", "3", url=db.url)
    assert res.exit_code == 0, res.output
    for e in evs:
        key = None if e.key is None else bytes(e.key)
        assert db.row(e.id).shard == outbox.shard_for(topic, key, e.event_id, 3), e
    assert {db.row(e.id).shard for e in evs} <= {0, 1, 2}


def test_unknown_event_ids_are_named_and_exit_1_while_the_known_ones_are_replayed(db: Db, cli: Cli) -> None:
    topic = f"t-{uid()}"
    (ev,) = db.write(topic, ["k"])
    db.publish([ev.id])
    missing = "01937c1e-0000-7000-8000-00000000dead"

    res = cli("replay", "--event-id", missing, url=db.url)
    assert res.exit_code == 1, res.output
    assert f"event id {missing} not found (never written, or pruned)" in res.stdout
    assert _audits(db) == [], "nothing replayed, nothing audited"

    dry = cli("replay", "--event-id", missing, "--event-id", str(ev.event_id), "--dry-run", url=db.url)
    assert dry.exit_code == 1 and missing in dry.stdout and "replayable (published) rows: 1" in dry.stdout
    assert db.row(ev.id).published_at is not None

    res = cli("replay", "--event-id", str(ev.event_id), "--event-id", missing, url=db.url)
    assert res.exit_code == 1 and "re-queued 1 events" in res.stdout and missing in res.stdout, res.output
    assert res.stdout.count("not found") == 1, "only the missing id is named"
    assert db.row(ev.id).published_at is None, "the known id is replayed all the same"
