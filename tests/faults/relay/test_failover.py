"""Two relays split the shards; SIGKILL one and the other resumes its shards within 5 s (measured)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

import outbox
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, dsn, pending, verify, wait_until, write_events

FAILOVER_BUDGET_S = 5.0


def owners(url: str) -> dict[int, str | None]:
    with psycopg.connect(dsn(url)) as c:
        return {int(s): o for s, o in c.execute("SELECT shard, owner FROM outbox.relay_lease ORDER BY shard")}


def keys_for_shards(topic: str, shards: set[int], n: int = 8) -> dict[int, str]:
    """One key landing on each of ``shards`` (same function the writers use)."""
    out: dict[int, str] = {}
    i = 0
    while set(out) != shards:
        k = f"probe-{i}"
        s = outbox.shard_for(topic, k.encode(), uuid.uuid4(), n)
        if s in shards and s not in out:
            out[s] = k
        i += 1
    return out


def test_survivor_resumes_the_killed_relays_shards_within_5s(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path) -> None:
    a = spawn(relays, relay_env, tmp_path, "a")
    b = spawn(relays, relay_env, tmp_path, "b")
    wait_until(lambda: sorted(str(o) for o in owners(fresh_db).values()) == ["a"] * 4 + ["b"] * 4, 30,
               "an even 4/4 split of the 8 shards")
    stop = threading.Event()

    def writer() -> None:  # a steady trickle across every shard while the failover happens
        while not stop.is_set():
            write_events(fresh_db, topic, 20, keys=40, per_txn=20, key_prefix=f"w{time.monotonic_ns()%7}-")
            stop.wait(0.05)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    try:
        wait_until(lambda: pending(fresh_db) < 100, 30, "the relays to keep up")
        a_shards = {s for s, o in owners(fresh_db).items() if o == "a"}
        probes = keys_for_shards(topic, a_shards)
        a.kill()
        killed_at, killed_wall = time.monotonic(), time.time()
        eng = sa.create_engine(fresh_db, poolclass=sa.pool.NullPool)
        with eng.begin() as c:
            ids = [s.id for s in outbox.enqueue(c, *[outbox.Event(topic=topic, type="probe", key=k, data={})
                                                     for k in probes.values()])]
        eng.dispose()

        def probes_published() -> bool:
            with psycopg.connect(dsn(fresh_db)) as c:
                n = c.execute("SELECT count(*) FROM outbox.event WHERE id = ANY(%s) AND published_at IS NOT NULL",
                              (ids,)).fetchone()
            return bool(n and n[0] == len(ids))

        wait_until(probes_published, 30, lambda: f"the dead relay's shards to resume\n{b.logs()}", interval=0.02)
        failover_s = time.monotonic() - killed_at
    finally:
        stop.set()
        t.join(30)
    (tmp_path / "failover.json").write_text(json.dumps({"failover_s": failover_s}))
    print(f"\nfailover: {failover_s:.2f}s (kill -9 to the dead relay's shards publishing again)")
    # Where the time went (lease acquisitions, then init_ms/read_ms of each recovery), for a failure's report.
    story = "\n".join(ln for ln in b.logs().splitlines() if "shard acquired" in ln or "recovery" in ln)
    assert failover_s <= FAILOVER_BUDGET_S, f"failover took {failover_s:.2f}s; killed at {killed_wall:.3f} " \
                                            f"(epoch s), the survivor's takeover:\n{story}"
    assert set(owners(fresh_db).values()) == {"b"}
    wait_until(lambda: pending(fresh_db) == 0, 60, "the backlog to drain")
    assert b.stop(30) == 0
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean, str(v)
