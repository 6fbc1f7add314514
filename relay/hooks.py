"""The worker's hook seam: the steps of a batch's protocol at which an injected object is called.

The shipped relay passes :data:`NO_HOOKS`, which does nothing; no setting of the relay changes that. The seam is
for the fault suite, which must crash the relay at an exact step of a batch (to prove recovery) and run a
deliberately wrong protocol (to prove its checks catch one). Those hooks live outside the shipped packages, in
``chaos/faulty_relay.py`` (``python -m chaos.faulty_relay``), and are handed to
:class:`relay.supervisor.Supervisor` (or to a :class:`relay.worker.ShardWorker`) as an object.

A hook runs on the calling worker's thread, inside its protocol: it may block, signal the process or raise, and
the worker treats what it raises like any error of that step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol


class Step(Enum):
    """Where in a batch a hook is called, in protocol order."""

    BEFORE_PRODUCE = "before_produce"  # batch claimed, Kafka transaction not begun
    MID_PRODUCE = "mid_produce"  # half the batch sent and flushed to the broker inside the open transaction
    AFTER_COMMIT = "after_commit"  # Kafka transaction committed, DB mark not started
    MID_MARK = "mid_mark"  # DB mark UPDATE executed, its transaction not committed


@dataclass(frozen=True)
class InFlight:
    """What a step is about: the shard's owner and epoch (as its lease says), and the rows of the step (the
    batch about to be or being produced; at AFTER_COMMIT and MID_MARK, the rows committed and being marked)."""

    shard: int
    owner: str
    epoch: int
    ids: tuple[int, ...]


class Hooks(Protocol):
    """Called by every worker of the process (one object shared by all: the supervisor passes its own)."""

    def batch_started(self) -> None:
        """A worker claimed a non-empty batch; its steps follow on the same thread."""

    def armed(self, step: Step) -> bool:
        """Whether :meth:`at` acts at ``step`` of the calling thread's batch. Asked for MID_PRODUCE only: the
        worker then flushes the records sent so far, so that the step finds them on the broker (a mid-batch
        flush the relay otherwise never does)."""

    def at(self, step: Step, batch: InFlight) -> None:
        """The calling thread's batch reached ``step``."""


class NoHooks:
    """The relay's hooks: none."""

    def batch_started(self) -> None:
        return None

    def armed(self, step: Step) -> bool:
        return False

    def at(self, step: Step, batch: InFlight) -> None:
        return None


NO_HOOKS: Hooks = NoHooks()
