"""Start-up problems get a clear message and a documented exit code (2 could not run, 3 bad configuration)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from stack.env import Stack
from stack.process import REPO_ROOT, free_port
from tests.integration.relay.harness import dsn


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


def test_database_unreachable_exits_2(bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                   "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert r.returncode == 2 and "database unreachable" in r.stderr, r.stderr


def test_schema_behind_exits_2(empty_db: str, bootstrap: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": empty_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    assert r.returncode == 2 and "schema behind" in r.stderr and "outbox migrate upgrade" in r.stderr, r.stderr


def test_kafka_unreachable_exits_2(fresh_db: str) -> None:
    r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"})
    assert r.returncode == 2 and "Kafka unreachable" in r.stderr, r.stderr


def test_http_port_taken_exits_2(fresh_db: str, bootstrap: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run_relay({"OUTBOX_DATABASE_URL": fresh_db, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                       "OUTBOX_RELAY_HTTP_HOST": "127.0.0.1", "OUTBOX_RELAY_HTTP_PORT": str(s.getsockname()[1])})
    assert r.returncode == 2 and "cannot serve HTTP" in r.stderr, r.stderr
