"""``make demo`` (``python -m demo``): the whole system from nothing, ending with the reconciler's verdict.

1. start Postgres + Kafka (``stack.env.start_stack``) and migrate three databases: the order service's (with the
   outbox) and one per consumer group;
2. start the relay (``python -m relay``) and a sample order service that writes orders with their events, through
   a synchronous ``Session`` and an ``AsyncSession``, while the relay publishes;
3. run two consumer groups with the inbox helper, each in its own database (billing: orders + payments;
   shipping: orders);
4. reconcile and write a self-contained HTML report. The last line printed is the verdict.
"""
