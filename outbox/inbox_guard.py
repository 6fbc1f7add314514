"""What the inbox does when a handler ends the transaction it was given (commit, rollback, or close).

The acknowledgement and the handler's effects must commit together, so the handler gets the inbox's connection
*inside* the inbox's transaction and must leave it open. When it does not:

* **commit**: the inbox row (not yet stamped ``processed_at``) and the handler's writes up to that commit are
  durable. Carrying on would skip the event on redelivery as if handled and do the same to every next record.
  The row is turned into a dead letter whose error says what happened (the reconciler lists it); writes the
  handler made after its commit are rolled back.
* **rollback** or **close** (without a commit first): nothing is recorded; the event is read again later.

Either way the :class:`~outbox.inbox.Inbox` stops: every later ``run_once`` raises
:class:`~outbox.errors.ConsumerError` until the handler is fixed and a new inbox is started.
"""

from __future__ import annotations

import sqlalchemy as sa

from outbox.errors import OutboxError
from outbox.received import ReceivedEvent
from outbox.store import inbox as store
from outbox.store import translate_errors


def transaction_ended(engine: sa.Engine, conn: sa.Connection, txn: sa.RootTransaction, *, pk: int,
                      ev: ReceivedEvent, attempt: int, group: str, schema: str) -> str | None:
    """None if ``txn`` is still the open transaction on ``conn``; else record what happened and say it."""
    if not conn.closed and txn.is_active:
        return None  # (a lost connection keeps the transaction "active": the caller handles that case)
    how = "closed the inbox's connection" if conn.closed else "ended the inbox's transaction (commit/rollback)"
    if not conn.closed and conn.in_transaction():
        conn.rollback()  # what the handler wrote after ending ours (autobegun) is not ours to commit
    note = (f"the handler {how} on attempt {attempt}: its writes up to its own commit are committed, later ones "
            "rolled back; check this event's effects")
    try:
        # A fresh connection: the handler may have closed the batch's one.
        with translate_errors("checking the inbox row"), engine.begin() as c:
            committed = store.mark_ended_by_handler(c, pk, note, schema)
        state = ("its inbox row was committed by the handler and is now dead-lettered saying so" if committed
                 else "nothing was recorded; it will be read again")
    except OutboxError as exc:
        state = f"whether the handler committed its inbox row is unknown ({exc})"
    return (f"inbox {group}: the handler {how} on event {ev.event_id} ({ev.topic}[{ev.partition}]@{ev.offset}); "
            f"{state}. The handler must not commit, roll back or close the connection it is given (the inbox "
            "commits it with the acknowledgement); fix the handler and start a new Inbox")
