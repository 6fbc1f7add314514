"""Start-up problems get a clear message and a documented exit code (2 could not run, 3 bad configuration).

A database or Kafka that is down, or a schema behind, is waited for (tests/integration/relay/test_liveness.py);
here OUTBOX_RELAY_STARTUP_WAIT_S bounds that wait, so these relays give up with exit 2 and say why."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import outbox
from stack.env import Stack
from stack.process import REPO_ROOT, free_port
from tests.conftest import create_topic
from tests.integration.relay.conftest import spawn
from tests.integration.relay.harness import RelayProcess, dsn, pending, scalar, wait_until, write_events


def run_relay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "KAFKA_"))}
    full.update({"OUTBOX_RELAY_HTTP_PORT": "-1", "OUTBOX_RELAY_KAFKA_TIMEOUT_S": "3", **env})
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=REPO_ROOT, env=full, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture
def empty_db(stack: Stack) -> Iterator[str]:
    name = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(stack.url("postgres")), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    yield stack.url(name)
    with psycopg.connect(dsn(stack.url("postgres")), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def test_bad_value_exits_3_naming_the_variable(fresh_db: str, bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "OUTBOX_RELAY_LEASE_TTL_S": "soon"})
    assert r.returncode == 3 and "OUTBOX_RELAY_LEASE_TTL_S" in r.stderr, r.stderr


def test_bad_flag_value_exits_3_naming_the_flag(fresh_db: str, bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}, "--shards", "0")
    assert r.returncode == 3 and "--shards" in r.stderr, r.stderr


def test_missing_setting_exits_3() -> None:
    r = run_relay({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert r.returncode == 3 and "OUTBOX_DATABASE_URL: is required" in r.stderr, r.stderr


def _waits(stderr: str, what: str) -> list[dict[str, object]]:
    return [d for d in map(json.loads, (line for line in stderr.splitlines() if line.startswith("{")))
            if d["msg"] == f"waiting for {what}"]


def test_database_unreachable_is_waited_for_until_the_bounded_wait_gives_up(bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                   "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "OUTBOX_RELAY_STARTUP_WAIT_S": "1.5"})
    assert r.returncode == 2, r.stderr
    assert "database unreachable (gave up waiting after OUTBOX_RELAY_STARTUP_WAIT_S=1.5s)" in r.stderr, r.stderr
    waits = _waits(r.stderr, "the database")
    assert len(waits) >= 2 and [w["attempt"] for w in waits] == list(range(1, len(waits) + 1)), r.stderr
    assert "is unreachable" in str(waits[0]["error"]), waits


def test_a_login_the_database_refuses_exits_3_without_waiting(fresh_db: str, bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db.replace("://postgres@", "://nobody@"),
                   "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert r.returncode == 3, r.stderr
    assert "configuration error: OUTBOX_DATABASE_URL: the database at" in r.stderr, r.stderr
    assert 'role "nobody" does not exist' in r.stderr and "waiting for" not in r.stderr, r.stderr


def test_schema_behind_is_waited_for_saying_to_migrate(empty_db: str, bootstrap: str) -> None:
    # Long enough for one logged wait even when a loaded machine makes the first attempt take over a second.
    r = run_relay({"OUTBOX_DATABASE_URL": empty_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "OUTBOX_RELAY_STARTUP_WAIT_S": "4"})
    assert r.returncode == 2 and "schema behind (gave up waiting" in r.stderr, r.stderr
    assert "outbox migrate upgrade" in r.stderr, r.stderr
    waits = _waits(r.stderr, "the outbox schema to be migrated")
    assert waits and "run `outbox migrate upgrade`" in str(waits[0]["error"]), r.stderr


def test_kafka_unreachable_is_waited_for_with_each_librdkafka_line_once_and_its_last_error(fresh_db: str) -> None:
    port = free_port()
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
                   "OUTBOX_RELAY_STARTUP_WAIT_S": "4"})
    assert r.returncode == 2 and "Kafka unreachable (gave up waiting" in r.stderr, r.stderr
    # librdkafka logs a failed connect every few ms, all delivered at once: each kind of line shows once.
    client = [re.sub(r"\d+", "#", line) for line in r.stderr.splitlines() if '"relay.kafka.client"' in line]
    assert client and len(client) == len(set(client)), r.stderr
    waits = _waits(r.stderr, "Kafka")
    assert waits and f"127.0.0.1:{port}" in str(waits[-1]["last_librdkafka_error"]), r.stderr
    verdict = r.stderr[r.stderr.index("outbox relay: Kafka unreachable"):]
    assert f"127.0.0.1:{port}" in verdict, verdict
    assert '"relay.kafka.client"' not in verdict, r.stderr  # the verdict is the last thing printed


@pytest.mark.parametrize("servers", [",,,", "host:notaport", ""])
def test_malformed_bootstrap_servers_exit_3(servers: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "KAFKA_BOOTSTRAP_SERVERS": servers})
    assert r.returncode == 3, r.stderr
    assert "configuration error: bad relay configuration: KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port...]" \
        in r.stderr, r.stderr


@pytest.mark.parametrize(("args", "env", "named"), [
    # Producer-only settings the admin client never sees: every shard worker used to fail on them forever.
    (["--kafka-config", "linger.ms=abc"], {}, "--kafka-config/OUTBOX_KAFKA_LINGER_MS linger.ms=abc: "),
    ([], {"OUTBOX_KAFKA_MESSAGE_MAX_BYTES": "-5"}, "OUTBOX_KAFKA_MESSAGE_MAX_BYTES message.max.bytes=-5: "),
    # These used to print a KafkaException traceback and exit 1.
    ([], {"OUTBOX_KAFKA_NOT_A_SETTING": "1"}, "OUTBOX_KAFKA_NOT_A_SETTING not.a.setting=1: "),
    ([], {"OUTBOX_KAFKA_SECURITY_PROTOCOL": "bogus"}, "OUTBOX_KAFKA_SECURITY_PROTOCOL security.protocol=bogus: "),
    ([], {"OUTBOX_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "OUTBOX_KAFKA_SASL_MECHANISM": "BOGUS"},
     "OUTBOX_KAFKA_SASL_MECHANISM sasl.mechanism=BOGUS: "),
    ([], {"OUTBOX_KAFKA_SECURITY_PROTOCOL": "SSL", "OUTBOX_KAFKA_SSL_CA_LOCATION": "/nonexistent/ca.pem"},
     "OUTBOX_KAFKA_SSL_CA_LOCATION ssl.ca.location=/nonexistent/ca.pem: "),
])
def test_a_setting_librdkafka_refuses_exits_3_before_taking_a_lease(
        fresh_db: str, bootstrap: str, args: list[str], env: dict[str, str], named: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, **env}, *args)
    assert r.returncode == 3, r.stderr
    assert "outbox relay: configuration error: " in r.stderr and named in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "relay started" not in r.stderr, r.stderr
    assert scalar(fresh_db, "SELECT count(*) FROM outbox.relay_lease WHERE owner IS NOT NULL") == 0


def test_a_refused_kafka_setting_never_shows_a_secret(fresh_db: str, bootstrap: str) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "OUTBOX_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "OUTBOX_KAFKA_SASL_MECHANISM": "PLAIN",
                   "OUTBOX_KAFKA_SASL_PASSWORD": secret, "OUTBOX_KAFKA_SSL_KEY_PASSWORD": secret})
    assert r.returncode == 3 and "OUTBOX_KAFKA_SASL_PASSWORD sasl.password (value hidden)" in r.stderr, r.stderr
    assert secret not in r.stderr + r.stdout


@pytest.mark.parametrize(("env", "named"), [
    ({"OUTBOX_RELAY_CHECKPOINT_REPLICATION": "0"}, "OUTBOX_RELAY_CHECKPOINT_REPLICATION: must be -1"),
    ({"OUTBOX_RELAY_CHECKPOINT_TOPIC": ".."}, "OUTBOX_RELAY_CHECKPOINT_TOPIC (--checkpoint-topic): may not be"),
    # Refused by the (one-broker) cluster itself: used to read "Kafka unreachable", exit 2.
    ({"OUTBOX_RELAY_CHECKPOINT_REPLICATION": "5"},
     "OUTBOX_RELAY_CHECKPOINT_REPLICATION=5: the broker refused to create the checkpoint topic"),
])
def test_a_checkpoint_topic_kafka_refuses_exits_3_naming_the_variable(
        relay_env: dict[str, str], env: dict[str, str], named: str) -> None:
    r = run_relay({**relay_env, **env})
    assert r.returncode == 3, r.stderr
    assert "outbox relay: configuration error: " in r.stderr and named in r.stderr, r.stderr
    assert "unreachable" not in r.stderr


def test_a_checkpoint_topic_name_the_broker_refuses_exits_3(relay_env: dict[str, str], bootstrap: str) -> None:
    # Kafka refuses "a.b" once "a_b" exists (they collide in metric names): only the broker can tell.
    tag = uuid.uuid4().hex[:8]
    create_topic(bootstrap, f"ckpt_{tag}", partitions=1)
    r = run_relay({**relay_env, "OUTBOX_RELAY_CHECKPOINT_TOPIC": f"ckpt.{tag}"})
    assert r.returncode == 3, r.stderr
    assert (f"configuration error: OUTBOX_RELAY_CHECKPOINT_TOPIC (--checkpoint-topic)='ckpt.{tag}': the broker "
            "refused this topic name") in r.stderr, r.stderr


@pytest.fixture
def login_without_grants(stack: Stack, fresh_db: str) -> Iterator[str]:
    """The URL of ``fresh_db`` as a login role that was granted nothing (`outbox roles sql` never applied)."""
    role = f"nogrants_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn(stack.url("postgres")), autocommit=True) as c:
        c.execute(f'CREATE ROLE "{role}" LOGIN')  # type: ignore[arg-type]
    yield fresh_db.replace("://postgres@", f"://{role}@")
    with psycopg.connect(dsn(stack.url("postgres")), autocommit=True) as c:
        c.execute(f'DROP ROLE IF EXISTS "{role}"')  # type: ignore[arg-type]


def test_a_role_without_grants_exits_3_saying_to_apply_the_roles(login_without_grants: str, bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": login_without_grants, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert r.returncode == 3, r.stderr
    assert ("outbox relay: configuration error: the relay's database role may not read the schema version "
            "(permission denied") in r.stderr, r.stderr
    assert "apply `outbox roles sql`" in r.stderr and "schema behind" not in r.stderr, r.stderr


def test_a_schema_name_postgres_would_truncate_exits_3() -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "KAFKA_BOOTSTRAP_SERVERS": "k:1",
                   "OUTBOX_SCHEMA": "s" * 64})
    assert r.returncode == 3 and "OUTBOX_SCHEMA: must be at most 63 characters" in r.stderr, r.stderr


def test_http_port_taken_exits_2(fresh_db: str, bootstrap: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                       "OUTBOX_RELAY_HTTP_HOST": "127.0.0.1", "OUTBOX_RELAY_HTTP_PORT": str(s.getsockname()[1])})
    assert r.returncode == 2 and "cannot serve HTTP" in r.stderr, r.stderr


@pytest.fixture
def writer_shards() -> Iterator[None]:
    """This test's writers use OUTBOX_SHARDS=8 (the default) until it calls outbox.configure itself."""
    outbox.configure(shards=8)
    yield
    outbox.configure()


def _stranded(url: str) -> tuple[int, int]:
    with psycopg.connect(dsn(url)) as c:
        row = c.execute("SELECT count(*), max(shard) FROM outbox.event "
                        "WHERE shard >= 4 AND published_at IS NULL AND dead_at IS NULL").fetchone()
    assert row is not None
    return int(row[0]), int(row[1] if row[1] is not None else -1)


def test_lowered_shard_count_with_pending_rows_beyond_it_exits_3_until_they_drain(
        writer_shards: None, relay_env: dict[str, str], relays: list[RelayProcess], topic: str,
        tmp_path: Path) -> None:
    write_events(relay_env["OUTBOX_DATABASE_URL"], topic, 48, keys=48)  # writers at OUTBOX_SHARDS=8
    url = relay_env["OUTBOX_DATABASE_URL"]
    n, top = _stranded(url)
    assert n > 0 and top >= 4, "precondition: 48 keys over 8 shards put rows in shards 4..7"

    r = run_relay({**relay_env, "OUTBOX_SHARDS": "4"})
    assert r.returncode == 3, r.stderr
    assert (f"outbox relay: configuration error: {n} pending rows are in shards >= OUTBOX_SHARDS=4 "
            f"(highest shard {top})") in r.stderr, r.stderr
    assert f"set OUTBOX_SHARDS back to the value the writers used (at least {top + 1})" in r.stderr, r.stderr
    assert "docs/operations.md#changing-the-shard-count" in r.stderr, r.stderr

    # Dead-lettered rows are not pending: they no longer count (nor would a relay claim them).
    assert scalar(url, "WITH d AS (UPDATE outbox.event SET dead_at = now() WHERE id = (SELECT min(id) "
                       "FROM outbox.event WHERE shard >= 4) RETURNING 1) SELECT count(*) FROM d") == 1
    left, top = _stranded(url)
    r = run_relay({**relay_env, "OUTBOX_SHARDS": "4"})
    assert r.returncode == 3 and f"{left} pending rows are in shards >= OUTBOX_SHARDS=4" in r.stderr, r.stderr

    # The documented fix: a relay at the writers' count drains the backlog ...
    old = spawn(relays, relay_env, tmp_path, "relay-8", OUTBOX_SHARDS="8")
    wait_until(lambda: pending(url) == 0 or not old.alive(), 60, "the relay at 8 shards to drain the backlog")
    assert pending(url) == 0, old.logs()
    assert old.stop() == 0, old.logs()

    # ... then writers and relays change together, and the relay at 4 shards starts and publishes.
    outbox.configure(shards=4)
    write_events(url, topic, 20, keys=20)
    new = spawn(relays, relay_env, tmp_path, "relay-4", OUTBOX_SHARDS="4")
    wait_until(lambda: pending(url) == 0 or not new.alive(), 60, "the relay at 4 shards to publish new rows")
    assert pending(url) == 0 and new.alive(), new.logs()
    assert new.stop() == 0, new.logs()


def _stranded_gauge(r: RelayProcess) -> float | None:
    for line in r.metrics().splitlines():
        if line.startswith("outbox_relay_stranded_rows "):
            return float(line.split()[1])
    return None


def test_rows_a_writer_strands_while_the_relay_runs_show_in_a_gauge_and_an_error_log(
        writer_shards: None, relay_env: dict[str, str], relays: list[RelayProcess], topic: str,
        tmp_path: Path) -> None:
    # The start-up check cannot see a writer deployed later with a larger OUTBOX_SHARDS: the running relay must.
    url = relay_env["OUTBOX_DATABASE_URL"]
    r = spawn(relays, relay_env, tmp_path, "relay-4", OUTBOX_SHARDS="4")
    wait_until(lambda: r.get("/readyz") == 200, 30, lambda: f"the relay to be ready\n{r.logs()}")
    assert _stranded_gauge(r) == 0.0

    write_events(url, topic, 48, keys=48)  # a writer still at OUTBOX_SHARDS=8
    n, top = _stranded(url)
    assert n > 0 and top >= 4, "precondition: 48 keys over 8 shards put rows in shards 4..7"
    wait_until(lambda: _stranded_gauge(r) == float(n), 30, lambda: f"the gauge to show {n} stranded rows\n{r.logs()}")
    wait_until(lambda: pending(url) == n, 30, "the rows in shards 0..3 to be published")
    log = r.logs(200)
    assert "pending rows sit in shards no relay claims" in log and f'"stranded": {n}' in log, log
    assert "docs/operations.md#changing-the-shard-count" in log, log

    # Once they are dealt with (here: dead-lettered by hand), the gauge clears and the relay says so.
    scalar(url, "WITH d AS (UPDATE outbox.event SET dead_at = now() WHERE shard >= 4 AND published_at IS NULL "
                "RETURNING 1) SELECT count(*) FROM d")
    wait_until(lambda: _stranded_gauge(r) == 0.0, 30, lambda: f"the gauge to clear\n{r.logs()}")
    wait_until(lambda: "no pending rows are stranded" in r.logs(200), 10, "the all-clear in the log")
    assert r.stop() == 0, r.logs()
