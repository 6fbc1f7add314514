"""An inbox consumer for the fault suite: acknowledges every event of its group in the consumer database."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import sqlalchemy as sa

from outbox.inbox import Inbox, ReceivedEvent


def handle(conn: sa.Connection, ev: ReceivedEvent) -> None:
    """The business side effect runs in the same transaction as the acknowledgement."""
    conn.execute(sa.text("UPDATE public.chaos_order SET n = n WHERE false"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topics", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = sa.create_engine(args.url, pool_pre_ping=True, pool_size=2)
    inbox = Inbox(engine, args.group, args.topics.split(","), handle, bootstrap=args.bootstrap)
    inbox.run(stop)


if __name__ == "__main__":
    main()
