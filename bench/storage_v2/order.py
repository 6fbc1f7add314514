"""``python -m bench.storage_v2.order``: the case that makes design (a) sort each batch by id (docs/decisions/035).

Writer B takes its xid first (a business write), writer A then enqueues key ``k`` and commits, and B enqueues
``k`` after it and commits: B's row has the lower xid and the higher id and key sequence. Both commit between two
snapshots, so they share one batch. Sorted by id (what (a) does) the key comes out A, B; sorted by ``(tx_id, id)``
it comes out B, A, and the bench's order check must say so. Exits 0 when both hold.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import psycopg
import sqlalchemy as sa

import outbox
from bench.storage_v2 import cluster, writes
from bench.storage_v2.sink import Sink, check
from bench.storage_v2.snapshot import Snapshot


class TxidOrder(Snapshot):
    """BROKEN ON PURPOSE: (a) with each batch in ``(tx_id, id)`` order."""

    name = "snapshot-txid-order"
    schema = "sv2_txid_order"
    order = "tx_id, id"


def _event(key: str) -> outbox.Event:
    return outbox.Event(topic=writes.TOPIC, type="bench.order", key=key, data={"n": 1})


def run(d: Snapshot, admin: psycopg.Connection[object]) -> dict[str, int]:
    d.create(admin)
    writes.use(d.schema, d.shards)
    engine = sa.create_engine(d.url, poolclass=sa.pool.NullPool)
    d.open()
    try:
        with engine.connect() as b, engine.connect() as a:
            tb = b.begin()
            b.execute(sa.text("SELECT pg_current_xact_id()"))  # B's business write: its xid comes first
            with a.begin():
                outbox.enqueue(a, _event("k"))
            outbox.enqueue(b, _event("k"))
            tb.commit()
        while len(d.sink.log) < 2:
            d.round()
        return check(d.sink.log, 2)
    finally:
        d.close()
        engine.dispose()


def main() -> int:
    pg = cluster.start(Path(tempfile.mkdtemp(prefix="bench-storage-v2-order-")))
    try:
        with psycopg.connect(pg.dsn(), autocommit=True) as admin:
            out = {cls.name: run(cls(pg.dsn(), pg.url(), shards=8, batch=1000, sink=Sink()), admin)
                   for cls in (Snapshot, TxidOrder)}
    finally:
        pg.stop()
    print(json.dumps(out, indent=2))
    ok = out["snapshot"]["order_violations"] == 0 and out["snapshot-txid-order"]["order_violations"] > 0
    print("ok: id order keeps the key's commit order; (tx_id, id) order is caught" if ok else "UNEXPECTED",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
