"""The claim floor: an id below which a shard worker's claim need not look (docs/decisions/015-claim-floor.md).

Why: the claim reads the partial index ``ix_event_pending (shard, id)`` from the shard's lowest id. Rows the relay
marked leave their index entries behind until vacuum, and while any snapshot older than the marks is open
Postgres cannot even flag them dead, so each claim re-reads them. With a big backlog on few shards that walk grew
to thousands of buffers per claim and halved the drain rate. Starting the claim above a floor skips them.

Why a floor cannot skip a row (``id > last_id`` cursors lose rows whose id is lower but whose commit is later):

* ``enqueue`` takes its transaction id before it draws event ids, and ids come from a sequence without a cache,
  so a transaction that drew an id below a row ``M`` a claim saw had its xid before ``M`` was drawn, hence
  before that claim's snapshot. The claim takes an xid of its own *after* its snapshot, its ``horizon``
  (``outbox.store.relay``), so every such transaction's xid is below the horizon. The claim's transaction has
  ended before the next claim starts, so the next snapshots' ``xmax`` is above the horizon, and a transaction
  below the horizon that still runs is in their in-progress list and holds their ``xmin`` below it. Once a
  later snapshot's ``xmin`` reaches the horizon, every such transaction has therefore ended: all rows up to
  ``M`` that will ever exist are visible. The candidate ``(M, horizon)`` is then *final*.
  (The first floor used the claim's snapshot ``xmax`` instead. That is latestCompletedXid + 1, and a running
  transaction whose xid is above every completed one is below no ``xmax``: the full chaos run caught it.)
* A claim ordered by id returns every pending row above the floor up to its last row (or all of them when it
  was not full), so once a final candidate covers a claim's rows, and the batch is marked, nothing pending below
  the new floor is left, except rows the batch did not finish (the floor stays below them) and rows of held keys.
* Rows that become pending again below the floor (DLQ retry, a released key, replay) bump ``relay_requeue.gen``
  in the same transaction; the claim compares it in SQL and falls back to no floor when it moved.

Pure logic, no I/O: unit-tested in ``tests/unit/relay/test_floor.py``.
"""

from __future__ import annotations

from outbox.store.relay import ClaimSnapshot

MAX_CANDIDATES = 64  # while a long writer transaction holds xmin back; dropping one only slows the floor down


class ClaimFloor:
    """One shard worker's floor. ``bound()`` goes into the claim; ``claimed()`` and ``finished()`` follow it."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.floor = 0
        self.gen = -1  # unknown: never equal to the table's, so the claim starts from the bottom
        self._candidates: list[tuple[int, int]] = []  # (highest id seen, horizon), oldest first
        self._reach = 0  # what the last claim proved, applied once its batch is done

    def bound(self) -> tuple[int, int]:
        """(floor, gen) for the claim: rows with id <= floor are skipped while the requeue generation is gen."""
        return (self.floor, self.gen) if self.enabled else (0, -1)

    def claimed(self, last_id: int, rows: int, limit: int, snap: ClaimSnapshot) -> None:
        """A claim returned ``rows`` (> 0) rows, the highest being ``last_id``."""
        if not self.enabled or rows <= 0:
            return
        if snap.gen != self.gen:  # the claim ran without a floor: start over
            self.gen, self.floor, self._candidates = snap.gen, 0, []
        if len(self._candidates) >= MAX_CANDIDATES:
            del self._candidates[-2]  # keep the oldest (final first) and the newest (proves the most)
        self._candidates.append((last_id, snap.horizon))
        final = [m for m, x in self._candidates if x <= snap.xmin]
        self._candidates = [(m, x) for m, x in self._candidates if x > snap.xmin]
        if not final:
            self._reach = self.floor
            return
        proven = max(final)
        # A full claim stopped at its limit: rows above its last one were not looked at.
        self._reach = proven if rows < limit else min(proven, last_id)

    def finished(self, first_unfinished: int | None) -> None:
        """The claimed batch's marks committed; ``first_unfinished`` is the lowest claimed id still pending
        (refused, set aside as a suspect, dead-lettered), or None."""
        if not self.enabled:
            return
        reach = self._reach if first_unfinished is None else min(self._reach, first_unfinished - 1)
        self.floor = max(self.floor, reach)
        self._reach = self.floor

    def reset(self) -> None:
        """Forget everything (a database error: the next claim starts from the bottom)."""
        self.floor, self.gen, self._candidates, self._reach = 0, -1, [], 0
