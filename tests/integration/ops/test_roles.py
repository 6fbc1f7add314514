"""``outbox roles sql``: each role can do its own part (through the real code paths) and nothing more."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import outbox
from outbox.errors import ConfigError
from outbox.store import inbox as inbox_store
from outbox.store.relay import Mark, RelayStore
from outbox.store.roles import Role, role_name, roles_sql
from relay import identity, startup
from relay.config import RelaySettings

DENIED = "permission denied"


class Roles:
    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url, self.prefix = admin_url, prefix
        self.engines: dict[Role, sa.Engine] = {}

    def login(self, role: Role) -> str:
        return f"{role_name(role, self.prefix)}_login"

    def engine(self, role: Role) -> sa.Engine:
        if role not in self.engines:
            url = self.admin_url.replace("://postgres@", f"://{self.login(role)}@")
            self.engines[role] = sa.create_engine(url, poolclass=sa.NullPool)
        return self.engines[role]

    def url(self, role: Role) -> str:
        return str(self.engine(role).url.render_as_string(hide_password=False))


def _admin(url: str, *sql: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        for q in sql:
            c.execute(q)  # type: ignore[arg-type]


@pytest.fixture
def roles(fresh_db: str) -> Iterator[Roles]:
    r = Roles(fresh_db, f"t{uuid.uuid4().hex[:8]}")
    _admin(fresh_db, roles_sql(prefix=r.prefix))
    _admin(fresh_db, *(f'CREATE ROLE "{r.login(x)}" LOGIN IN ROLE "{role_name(x, r.prefix)}"' for x in Role))
    try:
        yield r
    finally:
        for e in r.engines.values():
            e.dispose()
        names = [*(r.login(x) for x in Role), *(role_name(x, r.prefix) for x in Role)]
        _admin(fresh_db, *(f'DROP OWNED BY "{n}"' for n in names), *(f'DROP ROLE "{n}"' for n in names))


def _denied(engine: sa.Engine, sql: str, **params: object) -> None:
    with pytest.raises(sa.exc.ProgrammingError, match=DENIED), engine.begin() as c:
        c.execute(sa.text(sql), params)


def _ok(engine: sa.Engine, fn: Callable[[sa.Connection], object]) -> object:
    with engine.begin() as c:
        return fn(c)


def _seed(url: str, topic: str) -> list[outbox.StoredEvent]:
    eng = sa.create_engine(url, poolclass=sa.NullPool)
    with eng.begin() as c:
        out = outbox.enqueue(c, *(outbox.Event(topic=topic, type="t", key=k, data={}) for k in ("a", "b")))
    eng.dispose()
    return out


def test_roles_sql_is_idempotent(roles: Roles) -> None:
    _admin(roles.admin_url, roles_sql(prefix=roles.prefix))  # again: no error


def test_app_can_enqueue_and_nothing_more(roles: Roles) -> None:
    app = roles.engine(Role.APP)
    stored = _ok(app, lambda c: outbox.enqueue(c, outbox.Event(topic="orders", type="t", key="k1", data={"a": 1}),
                                                outbox.Event(topic="orders", type="t", key="k1", data={"a": 2})))
    assert [s.key_seq for s in stored] == [1, 2]  # type: ignore[attr-defined]
    _denied(app, "SELECT payload FROM outbox.event")
    _denied(app, "UPDATE outbox.event SET published_at = now()")
    _denied(app, "DELETE FROM outbox.event")
    _denied(app, "SELECT * FROM outbox.dead_letter")
    _denied(app, "INSERT INTO outbox.relay_lease (shard) VALUES (99)")
    _denied(app, "SELECT * FROM outbox.inbox")


def test_relay_can_claim_mark_dead_letter_and_lease_and_nothing_more(roles: Roles) -> None:
    evs = _seed(roles.admin_url, "orders")
    relay = roles.engine(Role.RELAY)
    startup.check_schema(relay, "outbox")
    rs = RelayStore(relay)
    startup.check_privileges(rs)
    resolved = identity.resolve(RelaySettings.load(environ={
        "OUTBOX_DATABASE_URL": relay.url.render_as_string(hide_password=False),
        "KAFKA_BOOTSTRAP_SERVERS": "unused:1"}), rs)  # records the outbox id at the first start
    assert resolved.outbox_id and rs.recorded_identity() is not None
    rs.ensure_leases(8)
    shards = sorted({e.shard for e in evs})
    epochs = rs.acquire("r1", shards, 30)
    assert rs.heartbeat("r1", "host", 1, 30) == ["r1"]
    claimed = {r.id: s for s in shards for r in rs.claim(s, 10)}
    assert set(claimed) == {e.id for e in evs}
    first, second = evs
    assert rs.mark_published(claimed[first.id], "r1", epochs[claimed[first.id]], [Mark(first.id, 0, 7)]) == 1
    assert rs.dead_letter(claimed[second.id], "r1", epochs[claimed[second.id]], second.id, reason="too large",
                          error_class="PermanentPublishError")
    assert rs.status().dead_letters_open == 1
    rs.release("r1", epochs)
    rs.deregister("r1")
    _denied(relay, "INSERT INTO outbox.event (event_id, topic, shard, payload, content_type, type, source, time)"
                   " VALUES (gen_random_uuid(), 't', 0, '', 'x', 't', 's', now())")
    _denied(relay, "UPDATE outbox.event SET payload = 'x'")
    _denied(relay, "DELETE FROM outbox.event")
    _denied(relay, "UPDATE outbox.key_sequence SET last_seq = 0")
    _denied(relay, "DELETE FROM outbox.dead_letter")
    _denied(relay, "UPDATE outbox.dead_letter SET event_id = gen_random_uuid()")
    _denied(relay, "SELECT * FROM outbox.inbox")


def test_a_relay_role_not_regranted_after_an_upgrade_is_refused_at_start_with_what_to_do(roles: Roles) -> None:
    """An upgrade that adds a table the claim reads (relay_requeue) leaves an old role without it until
    `outbox roles sql` is applied again: the relay must say so at start, not retry a permission error forever."""
    _admin(roles.admin_url, f'REVOKE SELECT ON outbox.relay_requeue FROM "{role_name(Role.RELAY, roles.prefix)}"')
    with pytest.raises(ConfigError, match=r"outbox roles sql.*after `outbox migrate upgrade`"):
        startup.check_privileges(RelayStore(roles.engine(Role.RELAY)))


def test_consumer_can_acknowledge_and_nothing_more(roles: Roles) -> None:
    cons = roles.engine(Role.CONSUMER)
    ack = inbox_store.Ack(consumer_group="g", event_id=uuid.uuid4(), outbox_id=1, topic="orders", partition=0,
                          offset=1, key=b"k", key_seq=1, event_time=None, outcome="processed")
    pk = _ok(cons, lambda c: inbox_store.acknowledge(c, ack, "outbox"))
    assert pk is not None
    _ok(cons, lambda c: inbox_store.mark_processed(c, pk, "outbox"))  # type: ignore[arg-type]
    _ok(cons, lambda c: inbox_store.register_subscription(c, "g", ["orders"], "outbox"))
    _denied(cons, "SELECT * FROM outbox.event")
    _denied(cons, "DELETE FROM outbox.inbox")
    _denied(cons, "INSERT INTO outbox.reconcile_checkpoint (consumer_group, id_lo, id_hi, expected, acknowledged,"
                  " digest) VALUES ('g', 1, 2, 2, 2, 'x')")


def test_auditor_reads_everything_and_writes_nothing(roles: Roles) -> None:
    _seed(roles.admin_url, "orders")
    aud = roles.engine(Role.AUDITOR)
    for t in ("event", "key_sequence", "dead_letter", "relay_lease", "relay_instance", "relay_identity", "inbox",
              "inbox_redelivery",
              "subscription", "reconcile_checkpoint", "replay_audit", "alembic_version"):
        _ok(aud, lambda c, t=t: c.execute(sa.text(f"SELECT count(*) FROM outbox.{t}")).scalar())
    _denied(aud, "INSERT INTO outbox.reconcile_checkpoint (consumer_group, id_lo, id_hi, expected, acknowledged,"
                 " digest) VALUES ('g', 1, 2, 2, 2, 'x')")
    _denied(aud, "INSERT INTO outbox.subscription (consumer_group, topic) VALUES ('g', 't')")
    _denied(aud, "UPDATE outbox.event SET published_at = now()")
    _denied(aud, "DELETE FROM outbox.replay_audit")


def test_operator_runs_replay_dlq_and_prune_and_cannot_write_events(roles: Roles) -> None:
    from relay.cli import app

    evs = _seed(roles.admin_url, "orders")
    _admin(roles.admin_url, f"UPDATE outbox.event SET published_at = now() - interval '2 days' WHERE id = {evs[0].id}",
           "INSERT INTO outbox.subscription VALUES ('g', 'orders')",
           f"INSERT INTO outbox.reconcile_checkpoint (consumer_group, id_lo, id_hi, expected, acknowledged, digest)"
           f" VALUES ('g', {evs[0].id}, {evs[0].id}, 1, 1, 'x')")
    url = roles.url(Role.OPERATOR)
    run = CliRunner().invoke
    res = run(app, ["replay", "--event-id", str(evs[0].event_id), "--database-url", url])
    assert res.exit_code == 0 and "re-queued 1" in res.stdout, res.output
    _admin(roles.admin_url, f"UPDATE outbox.event SET published_at = now() - interval '2 days' WHERE id = {evs[0].id}")
    res = run(app, ["prune", "--older-than", "1d", "--database-url", url])
    assert res.exit_code == 0 and "deleted 1" in res.stdout, res.output
    res = run(app, ["dlq", "list", "--database-url", url])
    assert res.exit_code == 0, res.output
    op = roles.engine(Role.OPERATOR)
    _denied(op, "INSERT INTO outbox.event (event_id, topic, shard, payload, content_type, type, source, time)"
                " VALUES (gen_random_uuid(), 't', 0, '', 'x', 't', 's', now())")
    _denied(op, "UPDATE outbox.event SET payload = 'x'")
    _denied(op, "DELETE FROM outbox.inbox")


def test_an_ops_command_without_its_grant_says_to_apply_the_roles_sql(roles: Roles) -> None:
    from relay.cli import app

    url = roles.url(Role.APP)  # the writers' role: no SELECT on dead_letter, no SELECT of event's state columns
    for cmd in (["dlq", "list"], ["replay", "--topic", "orders"]):
        res = CliRunner().invoke(app, [*cmd, "--database-url", url])
        assert res.exit_code == 2, res.output  # as for any database error (docs/operations.md)
        first = res.output.splitlines()[0]
        assert first.startswith("error: the database role lacks a grant this command needs (permission denied"), first
        assert "apply `outbox roles sql`" in first and "outbox_operator" in first and "docs/security.md" in first
        assert "caused by InsufficientPrivilege" in res.output, "the database's own words stay in the chain"
