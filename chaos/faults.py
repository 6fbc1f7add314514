"""The fault schedule: which fault fires when, drawn from a seeded RNG so a failing run can be replayed."""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from enum import Enum

from chaos.proxy import FaultProxy, Mode
from chaos.workload import Workload
from stack.kafka import KafkaCluster
from stack.postgres import PostgresServer


class Fault(Enum):
    RELAY_KILL = "relay_kill"  # SIGKILL one relay, restart it shortly after
    RELAY_STOP = "relay_stop"  # SIGSTOP one relay past its lease, then SIGCONT (a zombie)
    BROKER_BOUNCE = "broker_bounce"  # SIGKILL one broker, restart it
    DB_RESTART = "db_restart"  # Postgres immediate-mode stop (crash recovery), start
    KAFKA_OUTAGE = "kafka_outage"  # every broker down for outage_s while writers keep writing
    NET_BLACKHOLE = "net_blackhole"  # relay <-> Postgres: no byte moves for a few seconds
    NET_RESET = "net_reset"  # relay <-> Postgres: every connection reset, new ones refused briefly


@dataclass(frozen=True)
class Plan:
    tier: str
    duration_s: float
    writers: int
    rate: float
    keys: int
    relay_kills: int
    relay_stops: int
    broker_bounces: int
    db_restarts: int
    outage_s: float
    net_faults: int
    lease_ttl_s: float = 3.0
    min_events: int = 0  # writers go on past duration_s (up to half as long again) until this many committed


SMALL = Plan("small", duration_s=75, writers=2, rate=40, keys=100, relay_kills=4, relay_stops=1,
             broker_bounces=1, db_restarts=1, outage_s=12, net_faults=2)
# The goal counts events (>= 200,000): on a loaded machine the writers fall behind their rate, so the run writes
# until it has them (plus a margin) rather than stop short of the goal at a fixed time.
FULL = Plan("full", duration_s=560, writers=4, rate=120, keys=2000, relay_kills=32, relay_stops=2,
            broker_bounces=3, db_restarts=3, outage_s=125, net_faults=6, min_events=205_000)


def schedule(plan: Plan, seed: int) -> list[tuple[float, Fault]]:
    """Fault times over the run; the outage sits in the middle and nothing else is scheduled inside it."""
    rng = random.Random(seed)
    start, end = 5.0, plan.duration_s - 5.0
    o_start = (plan.duration_s - plan.outage_s) / 2
    o_end = o_start + plan.outage_s + 20  # brokers need time to come back
    items: list[tuple[float, Fault]] = [(o_start, Fault.KAFKA_OUTAGE)] if plan.outage_s > 0 else []

    def draw() -> float:
        while True:
            t = rng.uniform(start, end)
            if not (o_start - 10 <= t <= o_end):
                return t

    counts = {Fault.RELAY_KILL: plan.relay_kills, Fault.RELAY_STOP: plan.relay_stops,
              Fault.BROKER_BOUNCE: plan.broker_bounces, Fault.DB_RESTART: plan.db_restarts}
    for f, n in counts.items():
        items.extend((draw(), f) for _ in range(n))
    for i in range(plan.net_faults):
        items.append((draw(), Fault.NET_BLACKHOLE if i % 2 == 0 else Fault.NET_RESET))
    return sorted(items, key=lambda x: x[0])


@dataclass
class Injector:
    plan: Plan
    work: Workload
    cluster: KafkaCluster
    pg: PostgresServer
    proxy: FaultProxy
    rng: random.Random

    def __post_init__(self) -> None:
        self.counts: dict[str, float] = {f.value: 0 for f in Fault}

    def fire(self, fault: Fault) -> None:
        getattr(self, f"_{fault.value}")()
        self.counts[fault.value] += 1
        self.work.revive()

    def _relay_kill(self) -> None:
        victim = self.rng.choice(self.work.relays)
        victim.kill()
        time.sleep(self.rng.uniform(0.2, 1.5))  # a supervisor restarting it
        victim.start()

    def _relay_stop(self) -> None:
        victim = self.rng.choice(self.work.relays)
        victim.signal(signal.SIGSTOP)
        time.sleep(self.plan.lease_ttl_s * 2 + 2)  # well past its lease: the other relay takes over
        victim.signal(signal.SIGCONT)

    def _broker_bounce(self) -> None:
        node = self.rng.choice(self.cluster.nodes)
        node.kill()
        time.sleep(self.rng.uniform(2, 8))
        self.cluster.start_node(node.node_id, timeout=180)

    def _db_restart(self) -> None:
        self.pg.kill_immediate()
        time.sleep(self.rng.uniform(0.5, 3))
        self.pg.start()

    def _kafka_outage(self) -> None:
        for n in self.cluster.nodes:
            n.kill()
        t0 = time.monotonic()
        time.sleep(self.plan.outage_s)
        self.cluster.start(timeout=240)
        self.counts["outage_seconds"] = self.counts.get("outage_seconds", 0) + round(time.monotonic() - t0, 1)

    def _net_blackhole(self) -> None:
        self.proxy.set_mode(Mode.BLACKHOLE)
        time.sleep(self.rng.uniform(2, 6))
        self.proxy.set_mode(Mode.PASS)

    def _net_reset(self) -> None:
        self.proxy.set_mode(Mode.REFUSE)
        time.sleep(self.rng.uniform(1, 4))
        self.proxy.set_mode(Mode.PASS)
