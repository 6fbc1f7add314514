"""The Postgres the storage prototypes share, and what is measured on it.

One cluster for every design: ``wal_level=logical`` (design (b) needs it; the others pay its small extra WAL
too, so all arms see the same server), ``pg_stat_statements`` for buffers and WAL per statement, and a
``max_wal_size`` large enough that no checkpoint falls inside a measured window (each design's run starts with
an explicit CHECKPOINT instead, so every arm starts from the same state; ``--cold`` adds one between the writes
and the drain, the case of a backlog read after a checkpoint).

CPU is counted for the whole cluster, as ``/proc`` sees it: every child of the postmaster (client backends,
autovacuum launcher and workers, checkpointer, background writer, WAL writer, ...), plus the postmaster itself,
plus the children it reaped within the window (its ``cutime``/``cstime``), so an autovacuum worker that starts and
exits inside the window is counted in full.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.cpu import process_cpu
from stack.postgres import PostgresServer

_TICK = os.sysconf("SC_CLK_TCK")

SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "10",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.max": "2000",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "1h",
    "autovacuum_naptime": "5s",
}


def start(home: Path, wal_level: str = "logical") -> PostgresServer:
    """A fresh cluster under ``home`` with :data:`SETTINGS` (``wal_level`` overridable)."""
    pg = PostgresServer(data_dir=home / "pg", settings={**SETTINGS, "wal_level": wal_level})
    pg.init(fresh=True)
    pg.start()
    with psycopg.connect(pg.dsn(), autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return pg


def _role(cmdline: str) -> str:
    """A postmaster child's role from its title: client, autovacuum, or the background process's name."""
    title = cmdline.removeprefix("postgres: ")
    if "autovacuum" in title:
        return "autovacuum"
    for name in ("checkpointer", "background writer", "walwriter", "logical replication launcher", "io worker",
                 "walsummarizer", "archiver"):
        if title.startswith(name):
            return "background"
    return "client"


@dataclass(frozen=True)
class CpuSample:
    children: dict[int, tuple[str, float]]  # pid -> (role, CPU seconds)
    postmaster: float  # its own CPU seconds
    reaped: float  # CPU seconds of the children it has reaped so far (cutime + cstime)


class ClusterCpu:
    """CPU seconds of the whole cluster between two samples, split by role."""

    def __init__(self, pg: PostgresServer) -> None:
        self.pid = int((pg.data_dir / "postmaster.pid").read_text().split()[0])

    def sample(self) -> CpuSample:
        pm = psutil.Process(self.pid)
        kids: dict[int, tuple[str, float]] = {}
        for p in pm.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                kids[p.pid] = (_role(" ".join(p.cmdline())), process_cpu(p.pid))
        stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # fields after the comm: state(3) ... utime(14) stime(15) cutime(16) cstime(17), 1-based in proc(5)
        utime, stime, cutime, cstime = (int(x) / _TICK for x in stat[11:15])
        return CpuSample(kids, utime + stime, cutime + cstime)

    @staticmethod
    def used(a: CpuSample, b: CpuSample) -> dict[str, float]:
        """CPU seconds per role from ``a`` to ``b``, and ``total``. A child reaped in between is counted through
        the postmaster's ``cutime`` (its whole life), less what it had used by ``a``."""
        out: dict[str, float] = {"client": 0.0, "autovacuum": 0.0, "background": 0.0, "reaped": 0.0}
        for pid, (role, t) in b.children.items():
            out[role] += t - a.children.get(pid, (role, 0.0))[1]
        gone = sum(t for pid, (_, t) in a.children.items() if pid not in b.children)
        out["reaped"] = max(0.0, b.reaped - a.reaped - gone)
        out["background"] += b.postmaster - a.postmaster
        out["total"] = sum(out.values())
        return out


def wal_lsn(c: psycopg.Connection[Any]) -> int:
    """The current WAL insert position, in bytes."""
    row = c.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def wal_stats(c: psycopg.Connection[Any]) -> dict[str, int]:
    """Cluster-wide WAL records and full-page images so far (pg_stat_wal; backends flush it within ~1 s)."""
    row = c.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    assert row is not None
    return {"records": int(row[0]), "fpi": int(row[1]), "bytes": int(row[2])}


@dataclass(frozen=True)
class Statement:
    calls: int
    rows: int
    blocks: int  # shared buffers hit + read
    wal_bytes: int
    wal_fpi: int
    ms: float


def statements(c: psycopg.Connection[Any], like: str) -> Statement:
    """pg_stat_statements summed over the statements whose text matches ``like`` (top level)."""
    row = c.execute(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(rows), 0), "
        "coalesce(sum(shared_blks_hit + shared_blks_read), 0), coalesce(sum(wal_bytes), 0), "
        "coalesce(sum(wal_fpi), 0), coalesce(sum(total_exec_time), 0) "
        "FROM pg_stat_statements WHERE query LIKE %s AND toplevel", (like,)).fetchone()
    assert row is not None
    return Statement(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]), float(row[5]))


def delta(a: Statement, b: Statement) -> Statement:
    return Statement(b.calls - a.calls, b.rows - a.rows, b.blocks - a.blocks, b.wal_bytes - a.wal_bytes,
                     b.wal_fpi - a.wal_fpi, b.ms - a.ms)
