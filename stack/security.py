"""A real Kafka SASL_SSL listener for tests: TLS keys from ``openssl``, SCRAM-SHA-512 users from StorageTool.

:func:`start_secure_kafka` starts a single-node KRaft cluster with the usual PLAINTEXT listener (the harness's
readiness checks and admin use it) plus a ``SASL_SSL`` listener on its own port:

* a private CA and a broker certificate (SAN ``IP:127.0.0.1``, ``DNS:localhost``, so clients verify the
  hostname), packed into a PKCS#12 keystore with a store password and a key password;
* SCRAM-SHA-512 credentials written into the metadata log at format time
  (``StorageTool format --add-scram 'SCRAM-SHA-512=[name=...,password=...]'``), so they exist before the first
  client connects, with no ZooKeeper-era ``kafka-configs`` step.

:meth:`SecureKafka.client_config` gives the librdkafka settings a producer, consumer or the relay needs
(``OUTBOX_KAFKA_SECURITY_PROTOCOL=SASL_SSL`` etc. in the relay's environment).
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stack.kafka import KafkaCluster
from stack.process import StackError, free_port

MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class TlsMaterial:
    """CA certificate (for clients) and the broker's PKCS#12 keystore (for the listener)."""

    ca_pem: Path
    keystore: Path
    keystore_password: str
    key_password: str


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)

    def format_arg(self) -> str:
        return f"{MECHANISM}=[name={self.name},password={self.password}]"


def _openssl(*args: str, cwd: Path) -> None:
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if res.returncode != 0:
        raise StackError(f"openssl {args[0]} failed: {res.stderr.strip()[-2000:]}")


def make_tls(home: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsMaterial:
    """A fresh CA and a broker certificate signed by it, valid for ``hosts``; keys never leave ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    store_pw = secrets.token_urlsafe(12)
    san = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=kafka-outbox test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=home)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", f"/CN={hosts[0]}", cwd=home)
    (home / "broker.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "2", "-extfile", "broker.ext", cwd=home)
    # PKCS#12 as openssl writes it protects the key with the store password, so ssl.key.password repeats it.
    _openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
             "-name", "broker", "-out", "broker.p12", "-passout", f"pass:{store_pw}", cwd=home)
    for secret_file in ("ca.key", "broker.key"):
        (home / secret_file).chmod(0o600)
    return TlsMaterial(home / "ca.pem", home / "broker.p12", store_pw, store_pw)


@dataclass
class SecureKafka:
    """A running 1-node cluster with a SASL_SSL (SCRAM-SHA-512) listener next to its PLAINTEXT one."""

    cluster: KafkaCluster
    sasl_port: int
    tls: TlsMaterial
    users: tuple[ScramUser, ...]

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def client_config(self, user: ScramUser | None = None, password: str | None = None) -> dict[str, str]:
        """librdkafka settings for the SASL_SSL listener as ``user`` (default: the first), optionally with a
        different ``password`` (to prove a wrong one is refused)."""
        u = user or self.users[0]
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": u.name,
            "sasl.password": u.password if password is None else password,
            "ssl.ca.location": str(self.tls.ca_pem),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def stop(self) -> None:
        self.cluster.stop()


def secure_props(sasl_port: int, plain_port: int, controller_port: int, tls: TlsMaterial) -> dict[str, str]:
    """Broker settings adding the SASL_SSL listener (inter-broker and controller traffic stay on loopback)."""
    return {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{sasl_port},"
                     f"CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{sasl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms": MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(tls.keystore),
        "ssl.keystore.password": tls.keystore_password,
        "ssl.key.password": tls.key_password,
        "ssl.client.auth": "none",
        "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
    }


def start_secure_kafka(home: Path, users: tuple[ScramUser, ...] = (ScramUser("outbox-relay"),),
                       timeout: float = 180) -> SecureKafka:
    """Generate TLS material, format with the SCRAM users, start, and wait until a SASL_SSL client can log in."""
    if not users:
        raise StackError("at least one SCRAM user is needed")
    tls = make_tls(home / "tls")
    cluster = KafkaCluster(1, home=home / "kafka")
    node = cluster.node(1)
    sasl_port = free_port()
    cluster.extra_props = secure_props(sasl_port, node.broker_port, node.controller_port, tls)
    cluster.format_args = [a for u in users for a in ("--add-scram", u.format_arg())]
    cluster.start(timeout)
    secure = SecureKafka(cluster, sasl_port, tls, users)
    try:
        _await_login(secure, timeout)
    except Exception:
        cluster.stop()
        raise
    return secure


def _await_login(secure: SecureKafka, timeout: float) -> None:
    from confluent_kafka.admin import AdminClient

    from stack.process import wait_for

    admin = AdminClient({**secure.client_config(), "log_level": 0})

    def ok() -> bool:
        try:
            return bool(admin.list_topics(timeout=3).brokers)
        except Exception:
            return False

    wait_for(ok, timeout, f"a SCRAM-SHA-512 login over SASL_SSL at {secure.sasl_bootstrap}", interval=0.5)
