"""``outbox prune``: deletes only published rows past retention that every subscribed group's checkpoint covers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from outbox.schema import reconcile_checkpoint, subscription
from outbox.store import ops, prune
from tests.integration.ops.conftest import Cli, Db, uid


def _subscribe(db: Db, group: str, topic: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(subscription.insert().values(consumer_group=group, topic=topic))


def _checkpoint(db: Db, group: str, lo: int, hi: int) -> None:
    with db.engine.begin() as conn:
        conn.execute(reconcile_checkpoint.insert().values(consumer_group=group, id_lo=lo, id_hi=hi,
                                                          expected=hi - lo + 1, acknowledged=hi - lo + 1,
                                                          digest="test"))


def _ids(db: Db) -> set[int]:
    return {r.id for r in db.rows()}


def test_only_rows_covered_for_every_subscribed_group_are_pruned(db: Db, cli: Cli) -> None:
    t, lonely = f"t-{uid()}", f"lonely-{uid()}"
    evs = db.write(t, [f"k{i % 3}" for i in range(10)])
    other = db.write(lonely, ["x", "y"])
    pending = db.write(t, ["k0"])
    db.publish([e.id for e in (*evs, *other)])
    ids = [e.id for e in evs]
    for g in ("g1", "g2"):
        _subscribe(db, g, t)
    _checkpoint(db, "g1", ids[0], ids[2])
    _checkpoint(db, "g1", ids[5], pending[0].id)  # covers the pending row too: it must survive anyway
    _checkpoint(db, "g2", ids[0], other[-1].id)  # covers the unsubscribed topic's rows: they must survive
    want_gone = set(ids[0:3]) | set(ids[5:10])

    dry = cli("prune", "--older-than", "1h", "--dry-run", url=db.url)
    assert dry.exit_code == 0, dry.output
    assert "8 covered by reconcile checkpoints (prunable), 4 not yet covered (kept)" in dry.stdout, dry.stdout
    assert len(_ids(db)) == 13, "dry run deletes nothing"

    res = cli("prune", "--older-than", "1h", "--batch-size", "3", url=db.url)
    assert res.exit_code == 0, res.output
    assert "deleted 8 events" in res.stdout
    left = _ids(db)
    assert not (left & want_gone)
    assert left == {ids[3], ids[4], other[0].id, other[1].id, pending[0].id}

    again = cli("prune", "--older-than", "1h", url=db.url)
    assert again.exit_code == 0 and "nothing to prune" in again.stdout


def test_retention_keeps_recent_rows_and_no_checkpoint_means_nothing_goes(db: Db, cli: Cli) -> None:
    t = f"t-{uid()}"
    evs = db.write(t, ["a", "b", "c"])
    db.publish([e.id for e in evs])  # published "1 day ago"
    _subscribe(db, "g", t)
    res = cli("prune", "--older-than", "1h", url=db.url)
    assert res.exit_code == 0 and "0 covered" in res.stdout and "nothing to prune" in res.stdout
    _checkpoint(db, "g", evs[0].id, evs[-1].id)
    with db.engine.connect() as conn:
        plan = prune.prune_plan(conn, datetime.now(UTC) - timedelta(days=2))
    assert plan.eligible == 0, "published 1 day ago is inside a 2-day retention"
    res = cli("prune", "--older-than", "2d", url=db.url)
    assert res.exit_code == 0 and "nothing to prune" in res.stdout
    assert len(_ids(db)) == 3
    res = cli("prune", "--older-than", "12h", url=db.url)
    assert "deleted 3 events" in res.stdout and _ids(db) == set()


def test_bad_retention_is_a_usage_error(db: Db, cli: Cli) -> None:
    res = cli("prune", "--older-than", "a while", url=db.url)
    assert res.exit_code == 2 and "duration" in res.output


def test_a_replayed_row_is_not_pruned_until_published_again(db: Db) -> None:
    t = f"t-{uid()}"
    evs = db.write(t, ["a", "b"])
    db.publish([e.id for e in evs])
    _subscribe(db, "g", t)
    _checkpoint(db, "g", evs[0].id, evs[1].id)
    sel = ops.ReplaySelector(event_ids=(evs[0].event_id,))
    with db.engine.begin() as conn:
        audit = ops.start_replay_audit(conn, "op", sel)
        ops.replay_batch(conn, sel, audit, 0, 10, shards=8)
    cutoff = datetime.now(UTC)
    with db.engine.begin() as conn:
        ceiling = prune.prune_ceiling(conn)
        assert ceiling is not None
        gone = prune.prune_batch(conn, cutoff, ceiling, 0, 100)
    assert gone == [evs[1].id]
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outbox.event")).scalar() == 1
