"""A real Apache Kafka (KRaft, combined broker+controller) from Maven-resolved jars, 1 or 3 nodes.

Facts this relies on are in ``../shared/reference/kafka-runtime.md``: the SLF4J 1.7 binding the POMs lack,
internal-topic replication factors sized to the cluster, formatting once per data directory, fixed loopback
ports that survive restarts, and broker output going to files, never to an undrained pipe.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack.process import REPO_ROOT, STATE_DIR, StackError, free_port, port_open, tail, wait_for

# The harness's own Kafka clients log through Python logging, warnings and errors only: unlogged, librdkafka prints
# its lines raw on stderr, among the output of whatever started the stack (make demo), e.g. "%6|…|BGQUEUE|…|
# Purging 1 unserved events from background queue" when a client is freed.
CLIENT_LOG = {"log_level": 4}
log = logging.getLogger(__name__)

KAFKA_DIR = REPO_ROOT / "tools" / "kafka"
# Preferred first; the fallback is used only when Maven cannot resolve the preferred release.
VERSIONS: tuple[tuple[str, str], ...] = (("4.3.1", "2.25.4"), ("4.2.1", "2.25.3"))
TOOL_JVM = ["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData"]


def _libs_dir(version: str) -> Path:
    return KAFKA_DIR / f"libs-{version}"


def resolve_kafka_libs() -> Path:
    """Return the directory of Kafka jars, resolving them with Maven once (then reused, no downloads)."""
    for version, _ in VERSIONS:
        d = _libs_dir(version)
        if (d / ".complete").exists():
            return d
    errors = []
    for version, log4j in VERSIONS:
        d = _libs_dir(version)
        res = subprocess.run(
            ["mvn", "-B", "-q", f"-Dkafka.version={version}", f"-Dlog4j2.version={log4j}",
             f"-Dlibs.dir={d}", "dependency:copy-dependencies"],
            cwd=KAFKA_DIR, capture_output=True, text=True, check=False,
        )
        if res.returncode == 0 and (d / f"kafka_2.13-{version}.jar").exists():
            (d / ".complete").write_text(version)
            return d
        errors.append(f"{version}: {res.stdout[-2000:]}{res.stderr[-2000:]}")
    raise StackError("Maven could not resolve the Kafka jars:\n" + "\n".join(errors))


def _java_cmd(libs: Path, jvm: list[str], main: str, *args: str, log_config: str) -> list[str]:
    return ["java", *jvm, f"-Dlog4j2.configurationFile={KAFKA_DIR / 'conf' / log_config}",
            "-cp", f"{libs}/*", main, *args]


def kafka_tool(main: str, *args: str, timeout: float = 120, heap: str = "256m") -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's own tools (TopicCommand, TransactionsCommand, ConsoleConsumer...) to completion."""
    libs = resolve_kafka_libs()
    jvm = [f"-Xmx{heap}", *TOOL_JVM[1:]]
    return subprocess.run(_java_cmd(libs, jvm, main, *args, log_config="tools-log4j2.yaml"),
                          capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    home: Path
    heap: str = "768m"
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def props(self) -> Path:
        return self.home / "server.properties"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, libs: Path) -> None:
        if self.running():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The port must be free: a killed JVM can linger for a moment while the kernel reaps it.
        wait_for(lambda: not port_open(self.broker_port), 30, f"port {self.broker_port} to be released")
        jvm = [f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
               "-XX:ParallelGCThreads=1", "-XX:ConcGCThreads=1", "-XX:+ExitOnOutOfMemoryError",
               "-XX:-UsePerfData", f"-Dkafka.logs.dir={self.log_dir}"]
        out = open(self.log_dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.proc = subprocess.Popen(
                _java_cmd(libs, jvm, "kafka.Kafka", str(self.props), log_config="log4j2.yaml"),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            out.close()

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 60) -> None:
        """Clean stop (SIGTERM: controlled shutdown); SIGKILL if it does not exit within ``timeout``."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def kill(self) -> None:
        """Hard kill (SIGKILL): no shutdown hook runs."""
        if self.proc is None:
            return
        self._signal(signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def started_since(self, offset: int) -> bool:
        try:
            with open(self.log_dir / "stdout.log", "rb") as f:
                f.seek(offset)
                return b"Kafka Server started" in f.read()
        except OSError:
            return False

    def log_size(self) -> int:
        p = self.log_dir / "stdout.log"
        return p.stat().st_size if p.exists() else 0


@dataclass
class KafkaCluster:
    """A KRaft cluster of 1 or 3 combined nodes; 3 nodes use RF 3 and min.insync.replicas 2."""

    size: int = 1
    home: Path = field(default_factory=lambda: STATE_DIR / "kafka")
    nodes: list[KafkaNode] = field(default_factory=list)
    libs: Path | None = None
    # Additive hooks (used by stack.security); empty by default, which keeps the default configuration.
    extra_props: dict[str, str] = field(default_factory=dict)
    """Broker settings merged over the defaults of every node (e.g. an extra SASL_SSL listener)."""
    format_args: list[str] = field(default_factory=list)
    """Extra ``StorageTool format`` arguments (e.g. ``--add-scram 'SCRAM-SHA-512=[name=u,password=p]'``)."""

    def __post_init__(self) -> None:
        if self.size not in (1, 3):
            raise StackError("a cluster has 1 or 3 nodes")
        if not self.nodes:
            heap = "1g" if self.size == 1 else "640m"
            self.nodes = [
                KafkaNode(i, free_port(), free_port(), self.home / f"node{i}", heap=heap)
                for i in range(1, self.size + 1)
            ]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def _render(self, node: KafkaNode) -> str:
        rf = 1 if self.size == 1 else 3
        isr = 1 if self.size == 1 else 2
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.home / "data",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": 5,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": 5,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr,
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "num.partitions": 1,
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "false",
            "unclean.leader.election.enable": "false",
            "num.network.threads": 2,
            "num.io.threads": 4 if self.size == 1 else 2,
            "num.replica.fetchers": 1,
            "num.recovery.threads.per.data.dir": 1,
            "log.cleaner.dedupe.buffer.size": 2097152,
            "broker.session.timeout.ms": 6000,
            "broker.heartbeat.interval.ms": 1000,
            "delete.topic.enable": "true",
        }
        props.update(self.extra_props)
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, timeout: float = 120) -> None:
        self.libs = self.libs or resolve_kafka_libs()
        fresh = not all((n.home / "data" / "meta.properties").exists() for n in self.nodes)
        if fresh:
            cid = kafka_tool("kafka.tools.StorageTool", "random-uuid").stdout.strip()
            for n in self.nodes:
                n.home.mkdir(parents=True, exist_ok=True)
                n.props.write_text(self._render(n))
                # Format once per data directory; never again before a restart.
                res = kafka_tool("kafka.tools.StorageTool", "format", "-t", cid, "-c", str(n.props),
                                 *self.format_args)
                if res.returncode != 0:
                    raise StackError(f"StorageTool format failed for node {n.node_id}: {res.stdout}{res.stderr}")
        marks = {n.node_id: n.log_size() for n in self.nodes}
        for n in self.nodes:
            n.start(self.libs)
        for n in self.nodes:
            self._await_started(n, marks[n.node_id], timeout)
        self.wait_ready(timeout)

    def _await_started(self, n: KafkaNode, mark: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if n.started_since(mark):
                return
            if not n.running():
                raise StackError(
                    f"Kafka node {n.node_id} exited during start (log {n.log_dir}/stdout.log):\n"
                    f"{tail(n.log_dir / 'stdout.log')}"
                )
            time.sleep(0.2)
        raise StackError(f"Kafka node {n.node_id} not started after {timeout:.0f}s:\n{tail(n.log_dir / 'stdout.log')}")

    def wait_ready(self, timeout: float = 120) -> None:
        """Readiness is a client round-trip: metadata lists every running broker."""
        from confluent_kafka.admin import AdminClient

        want = {n.node_id for n in self.nodes if n.running()}
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_LOG}, logger=log)

        def ok() -> bool:
            try:
                md = admin.list_topics(timeout=2)
            except Exception:
                return False
            return want <= set(md.brokers)

        wait_for(ok, timeout, f"Kafka brokers {sorted(want)} to answer a metadata request at {self.bootstrap}")

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def restart_node(self, node_id: int, hard: bool = False, timeout: float = 120) -> None:
        n = self.node(node_id)
        if hard:
            n.kill()
        else:
            n.stop()
        self.start_node(node_id, timeout)

    def start_node(self, node_id: int, timeout: float = 120) -> None:
        n = self.node(node_id)
        assert self.libs is not None
        mark = n.log_size()
        n.start(self.libs)
        self._await_started(n, mark, timeout)
        self.wait_ready(timeout)

    def stop(self) -> None:
        """Stop every node. Below a controller majority a SIGTERM shutdown can stall, so the last go hard."""
        for i, n in enumerate(self.nodes):
            if self.size == 3 and i < 1:
                n.stop(timeout=30)
            else:
                n.kill()

    def create_topic(self, name: str, partitions: int = 3, config: dict[str, str] | None = None) -> None:
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.cimpl import NewTopic

        rf = 1 if self.size == 1 else 3
        cfg = {} if self.size == 1 else {"min.insync.replicas": "2"}
        cfg.update(config or {})
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_LOG}, logger=log)
        fut = admin.create_topics([NewTopic(name, partitions, rf, config=cfg)], operation_timeout=30)
        fut[name].result(60)
