"""``python -m chaos.faulty_relay``: the relay daemon with faults injected, for the fault suite only.

It runs the shipped daemon (``relay.app.main``: ``python -m relay`` without flags, configured by the same
environment) with hooks at the steps of each batch (relay/hooks.py). The relay itself has no setting that does
any of this, and this package is test tooling, not part of the wheel. The hooks read their own variables:

- ``FAULTY_RELAY_KILL_AT``: ``before_produce``, ``mid_produce``, ``after_commit`` or ``mid_mark``: the process
  signals itself at that step of its Nth non-empty batch (to prove recovery from that crash window);
- ``FAULTY_RELAY_KILL_BATCH``: N (default 1), counted over the whole process;
- ``FAULTY_RELAY_KILL_SIGNAL``: ``KILL`` (default: a crash) or ``STOP`` (freeze: a zombie the test resumes with
  SIGCONT);
- ``FAULTY_RELAY_BROKEN``: ``mark_before_commit``, a deliberately wrong protocol that marks each batch published
  before its Kafka transaction begins. A crash between the two loses the batch from Kafka while the table says
  "published": the fault suite's checks must say "lost".

A bad value exits 3 naming the variable, as the relay's own settings do.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import sqlalchemy as sa

from outbox.errors import ConfigError
from outbox.store.relay import Mark, RelayStore
from relay import app
from relay.config import RelaySettings
from relay.hooks import InFlight, Step

KILL_AT, KILL_BATCH, KILL_SIGNAL, BROKEN = (f"FAULTY_RELAY_{n}" for n in ("KILL_AT", "KILL_BATCH", "KILL_SIGNAL",
                                                                          "BROKEN"))
SIGNALS = {"KILL": signal.SIGKILL, "STOP": signal.SIGSTOP}
log = logging.getLogger("chaos.faulty_relay")
T = TypeVar("T")


class Broken(Enum):
    """A deliberately wrong relay the fault suite must catch."""

    # Marks rows published before the Kafka commit. (Recovery after a takeover can only mark rows, never unmark
    # them, so with every batch marked first it finds nothing to do: the loss stands.)
    MARK_BEFORE_COMMIT = "mark_before_commit"


@dataclass(frozen=True)
class FaultSettings:
    kill_at: Step | None = None
    kill_batch: int = 1
    kill_signal: signal.Signals = signal.SIGKILL
    broken: Broken | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FaultSettings:
        """Raises ValueError naming the variable of a bad value."""
        kill_at = _choice(environ, KILL_AT, {s.value: s for s in Step})
        broken = _choice(environ, BROKEN, {b.value: b for b in Broken})
        sig = _choice(environ, KILL_SIGNAL, SIGNALS) or signal.SIGKILL
        raw = environ.get(KILL_BATCH, "1")
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{KILL_BATCH}: expected a batch number of at least 1 (got {raw!r})")
        return cls(kill_at, int(raw), sig, broken)


def _choice(environ: Mapping[str, str], var: str, choices: Mapping[str, T]) -> T | None:
    raw = environ.get(var)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ValueError(f"{var}: expected one of {', '.join(choices)} (got {raw!r})")
    return choices[raw]


class FaultHooks:
    """The hooks (relay.hooks.Hooks) of the faulty relay. One object for the process: the batch count is
    process-wide, and the batch a worker thread is in is the one its steps belong to."""

    def __init__(self, faults: FaultSettings, *, mark_early: RelayStore | None = None,
                 kill: Callable[[int, int], None] = os.kill) -> None:
        self.kill_at, self.kill_batch, self.sig = faults.kill_at, faults.kill_batch, faults.kill_signal
        self._mark_early = mark_early  # the database marked before the Kafka commit (Broken.MARK_BEFORE_COMMIT)
        self._kill = kill
        self._batches = 0
        self._lock = threading.Lock()
        self._armed_batch = threading.local()
        self._said_broken = False

    def batch_started(self) -> None:
        """Count one non-empty batch; the calling thread's batch is the armed one if it is the Nth."""
        with self._lock:
            self._batches += 1
            self._armed_batch.n = self._batches

    def armed(self, step: Step) -> bool:
        return self.kill_at is step and getattr(self._armed_batch, "n", 0) == self.kill_batch

    def at(self, step: Step, batch: InFlight) -> None:
        if self.armed(step):
            log.warning("TEST fault switch", extra={"point": step.value, "batch": self.kill_batch,
                                                    "signal": self.sig.name})
            for h in logging.getLogger().handlers:
                h.flush()
            sys.stderr.flush()
            self._kill(os.getpid(), self.sig)
            self.kill_at = None  # after a SIGSTOP/SIGCONT, carry on (as the zombie under test)
        if step is Step.BEFORE_PRODUCE and self._mark_early is not None and batch.ids:
            if not self._said_broken:
                self._said_broken = True
                log.warning("TEST broken relay: marking batches published before their Kafka transaction",
                            extra={"broken": Broken.MARK_BEFORE_COMMIT.value})
            self._mark_early.mark_published(batch.shard, batch.owner, batch.epoch,
                                            [Mark(i, -1, -1) for i in batch.ids])


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    if argv:
        print("usage: python -m chaos.faulty_relay (configured by the environment only)", file=sys.stderr)
        return app.EXIT_COULD_NOT_RUN
    try:
        faults = FaultSettings.from_env(environ)
    except ValueError as exc:
        print(f"python -m chaos.faulty_relay: configuration error: {exc}", file=sys.stderr, flush=True)
        return app.EXIT_CONFIG
    if faults.broken is not Broken.MARK_BEFORE_COMMIT:
        return app.main(hooks=FaultHooks(faults))
    try:
        settings = RelaySettings.load()
    except ConfigError:
        return app.main()  # which says what is wrong, as the relay would
    engine = sa.create_engine(settings.sqlalchemy_url, pool_size=2, connect_args={"connect_timeout": 10})
    try:
        return app.main(hooks=FaultHooks(faults, mark_early=RelayStore(engine, settings.db_schema)))
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
