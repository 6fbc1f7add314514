"""TEST ONLY: the fault switch. Kills this process at a named point of the Nth batch (OUTBOX_RELAY_TEST_KILL_AT).

Never set it in production: the relay SIGKILLs itself, which is exactly the crash the fault suite recovers from.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from relay.config_values import FaultSignal, KillPoint

log = logging.getLogger("relay.faults")


class Faults:
    """Shared by every worker of the process: the batch count is process-wide."""

    def __init__(self, kill_at: KillPoint | None = None, kill_batch: int = 1,
                 sig: FaultSignal = FaultSignal.KILL) -> None:
        self.kill_at = kill_at
        self.sig = signal.SIGSTOP if sig is FaultSignal.STOP else signal.SIGKILL
        self.kill_batch = kill_batch
        self._batches = 0
        self._lock = threading.Lock()
        self._armed_batch = threading.local()

    def batch_started(self) -> None:
        """Count one non-empty batch; the calling thread's batch is the armed one if it is the Nth."""
        with self._lock:
            self._batches += 1
            self._armed_batch.n = self._batches

    def armed(self, point: KillPoint) -> bool:
        return self.kill_at is point and getattr(self._armed_batch, "n", 0) == self.kill_batch

    def at(self, point: KillPoint) -> None:
        if self.armed(point):
            log.warning("TEST fault switch", extra={"point": point.value, "batch": self.kill_batch,
                                                    "signal": self.sig.name})
            for h in logging.getLogger().handlers:
                h.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), self.sig)
            self.kill_at = None  # after a SIGSTOP/SIGCONT, carry on (as the zombie under test)
