"""The relay behind a real PgBouncer (docs/operations.md, "PgBouncer"): through session pooling it starts and
publishes; transaction and statement pooling are refused at start (exit 3) with the fix, before the relay has set
anything on a connection that the pool would hand to other clients."""

from __future__ import annotations

import signal
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from outbox.errors import PoolingModeError
from outbox.store.relay_session import check_session, keep_session_settings
from relay.pooler import require_own_sessions
from stack.pgbouncer import PgBouncer
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, pending, scalar, verify, wait_until, write_events
from tests.integration.relay.test_startup import run_relay

Bouncers = Callable[[str], PgBouncer]
REFUSAL = "configuration error: OUTBOX_DATABASE_URL leads to a connection pooler in transaction or statement mode"


def _db(url: str) -> str:
    return sa.make_url(url).database or ""


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"prepare_threshold": None})


@pytest.mark.parametrize(("mode", "proxied", "own"), [
    ("direct", False, True), ("session", True, True), ("transaction", True, False)])
def test_the_session_check_tells_a_session_of_its_own_from_transaction_pooling(
        pg_url: str, pgbouncer: Bouncers, mode: str, proxied: bool, own: bool) -> None:
    eng = _engine(pg_url if mode == "direct" else pgbouncer(mode).url(_db(pg_url)))
    try:
        seen = check_session(eng)
    finally:
        eng.dispose()
    assert (seen.proxied, seen.own_session) == (proxied, own), seen


@pytest.mark.parametrize(("mode", "refused"), [
    ("direct", None), ("session", None),
    ("transaction", "a connection left idle lost its server connection to another client's transaction"),
    ("statement", "it refused a transaction (transaction blocks not allowed in statement pooling mode)")])
def test_the_relay_requires_a_session_of_its_own(pg_url: str, pgbouncer: Bouncers, mode: str,
                                                 refused: str | None) -> None:
    eng = _engine(pg_url if mode == "direct" else pgbouncer(mode).url(_db(pg_url)))
    try:
        if refused is None:
            require_own_sessions(eng)
            return
        with pytest.raises(PoolingModeError, match="pool_mode = session") as info:
            require_own_sessions(eng)
    finally:
        eng.dispose()
    assert refused in str(info.value), info.value


def test_the_session_setting_is_a_set_pgbouncer_lets_through_and_resets(pg_url: str, pgbouncer: Bouncers) -> None:
    bouncer = pgbouncer("session")
    # What the relay used to send: PgBouncer refuses a startup parameter it does not track.
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter: options"):
        psycopg.connect(bouncer.dsn(_db(pg_url)), options="-c idle_in_transaction_session_timeout=5000")
    eng = sa.create_engine(bouncer.url(_db(pg_url)), pool_size=1)
    keep_session_settings(eng)
    try:
        with eng.connect() as c:
            assert c.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar() == "5s"
    finally:
        eng.dispose()
    # The relay's connection closed: PgBouncer's DISCARD ALL reset the server connection the next client gets.
    with psycopg.connect(bouncer.dsn(_db(pg_url)), autocommit=True) as c:
        assert c.execute("SHOW idle_in_transaction_session_timeout").fetchone() == ("0",)


def test_the_relay_publishes_through_session_pooling(  # noqa: PLR0917
        relays: list[RelayProcess], relay_env: dict[str, str], fresh_db: str, bootstrap: str, topic: str,
        tmp_path: Path, pgbouncer: Bouncers) -> None:
    bouncer = pgbouncer("session")
    write_events(fresh_db, topic, 300, keys=10)
    r = spawn(relays, {**relay_env, "OUTBOX_DATABASE_URL": bouncer.url(_db(fresh_db))}, tmp_path, "pooled")
    wait_until(lambda: pending(fresh_db) == 0, 90, lambda: f"the backlog to drain; relay log:\n{r.logs()}")
    write_events(fresh_db, topic, 100, keys=10)  # while running: found by the waker's prepared probe
    wait_until(lambda: pending(fresh_db) == 0, 60, lambda: f"new events to drain; relay log:\n{r.logs()}")
    wait_until(lambda: r.get("/readyz") == 200, 10, "readyz")
    served = [c for c in bouncer.clients() if c["database"] == _db(fresh_db)]
    assert served and {c["application_name"] for c in served} == {"outbox-relay"}, served
    r.signal(signal.SIGTERM)
    assert r.wait(30) == 0, r.logs()
    v = verify(fresh_db, bootstrap, [topic])
    assert v.clean and v.events == 400, str(v)


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_the_relay_refuses_transaction_and_statement_pooling_naming_the_fix(
        fresh_db: str, bootstrap: str, pgbouncer: Bouncers, mode: str) -> None:
    bouncer = pgbouncer(mode)
    r = run_relay({"OUTBOX_DATABASE_URL": bouncer.url(_db(fresh_db)), "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert r.returncode == 3, r.stderr
    assert REFUSAL in r.stderr and "pool_mode = session" in r.stderr, r.stderr
    assert 'docs/operations.md, "PgBouncer"' in r.stderr, r.stderr
    assert "waiting for" not in r.stderr and "relay started" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.relay_lease WHERE owner IS NOT NULL") == 0
    if mode == "transaction":
        # Nothing the relay sets on its own connections stayed behind on the server connections of the pool:
        # hold a transaction on each of them at once (more than the refusal could have used) and look.
        with ExitStack() as held:
            seen = set()
            for _ in range(4):
                c = held.enter_context(psycopg.connect(bouncer.dsn(_db(fresh_db)), prepare_threshold=None))
                seen.add(c.execute("SHOW idle_in_transaction_session_timeout").fetchone())
        assert seen == {("0",)}, seen
