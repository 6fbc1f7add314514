"""The processes of a fault-suite run: business writers, relay instances and inbox consumers.

Each runs as its own OS process with output to a log file, so it can be SIGKILLed, SIGSTOPped and restarted
like in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        if self.running():
            return
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.starts += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def terminate(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


@dataclass
class Workload:
    home: Path
    db_url: str  # writers and consumers: direct
    relay_db_url: str  # relays: through the fault proxy
    bootstrap: str
    topics: list[str]
    groups: list[str]
    writers: list[Proc] = field(default_factory=list)
    relays: list[Proc] = field(default_factory=list)
    consumers: list[Proc] = field(default_factory=list)

    def build(self, n_writers: int, rate: float, keys: int, *, n_relays: int = 2,
              relay_env: dict[str, str] | None = None, relay_module: str = "relay") -> None:
        """``relay_module``: ``relay`` (the shipped daemon) or ``chaos.faulty_relay`` (with faults injected)."""
        py = sys.executable
        for i in range(n_writers):
            self.writers.append(Proc(
                f"writer{i}",
                [py, "-m", "chaos.writer", "--url", self.db_url, "--topics", ",".join(self.topics),
                 "--keys", str(keys), "--rate", str(rate), "--seed", str(i), "--stats",
                 str(self.home / f"writer{i}.json")],
                {}, self.home / f"writer{i}.log"))
        for i in range(n_relays):
            self.relays.append(Proc(
                f"relay{i}", [py, "-m", relay_module],
                {"OUTBOX_DATABASE_URL": self.relay_db_url, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                 "OUTBOX_RELAY_INSTANCE_ID": f"chaos-relay{i}", "OUTBOX_RELAY_HTTP_PORT": "-1",
                 "OUTBOX_RELAY_KAFKA_TIMEOUT_S": "20", **(relay_env or {})},
                self.home / f"relay{i}.log"))
        for g in self.groups:
            self.consumers.append(Proc(
                f"consumer-{g}",
                [py, "-m", "chaos.consumer", "--url", self.db_url, "--bootstrap", self.bootstrap,
                 "--group", g, "--topics", ",".join(self.topics)],
                {}, self.home / f"consumer-{g}.log"))

    def start(self) -> None:
        for p in [*self.relays, *self.consumers, *self.writers]:
            p.start()

    def stop_writers(self) -> None:
        for w in self.writers:
            w.terminate()

    def stop_all(self) -> None:
        for p in [*self.writers, *self.relays, *self.consumers]:
            p.terminate(timeout=20)

    def writer_stats(self) -> dict[str, int]:
        total = {"committed": 0, "failed_db": 0, "failed_other": 0}
        for i in range(len(self.writers)):
            path = self.home / f"writer{i}.json"
            if path.exists():
                data = json.loads(path.read_text())
                for k in total:
                    total[k] += int(data[k])
        return total

    def writer_errors(self) -> dict[str, int]:
        """Every writer failure by cause (what a failed assertion on writer_failures_other should show)."""
        out: dict[str, int] = {}
        for i in range(len(self.writers)):
            path = self.home / f"writer{i}.json"
            if path.exists():
                for what, n in json.loads(path.read_text()).get("errors", {}).items():
                    out[what] = out.get(what, 0) + int(n)
        return out

    def revive(self) -> None:
        """Restart any relay or consumer that is not running (after a kill, or if it exited on its own)."""
        for p in [*self.relays, *self.consumers]:
            if not p.running():
                p.start()
