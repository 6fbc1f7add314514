"""The ORM mixin shares enqueue's validation path: the write-time refusals of issue 18 (Kafka's internal topics,
colliding JSON keys, records over the limit as Kafka counts them) stop a flush before anything is written."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from outbox import testing
from outbox.errors import PayloadError, TopicError
from tests.integration.write.models import Order
from tests.integration.write.test_orm import s, shop

__all__ = ["s", "shop"]  # the fixtures of test_orm (a savepoint-isolated session with the hook installed)


def test_internal_topic_is_refused_where_the_event_is_recorded(s: Session) -> None:
    with s.begin():
        order = Order(customer="ann", total=Decimal(1))
        s.add(order)
        with pytest.raises(TopicError, match="internal topics"):
            order.record_event(type="x", topic="__transaction_state")


@pytest.mark.parametrize(("kw", "says"), [
    ({"data": {"a": {1: "x", "1": "y"}}}, r"two keys at \$\.a"),
    ({"data": b"x" * 1_000_000, "content_type": "application/octet-stream",
      "headers": [(f"h{i:04d}", "v") for i in range(8000)]}, "over the maximum of 1048576"),
])
def test_refusals_stop_the_flush_and_nothing_is_written(s: Session, kw: dict[str, object], says: str) -> None:
    s.begin()
    order = Order(customer="bob", total=Decimal(1))
    s.add(order)
    order.record_event(type="order.noted", **kw)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match=says):
        s.flush()
    s.rollback()
    with s.begin():
        testing.assert_enqueued(s, type="order.noted", count=0)
