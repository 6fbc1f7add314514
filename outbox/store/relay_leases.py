"""The relay's leases and instance heartbeats (mixed into ``RelayStore``), and the error translation all of the
relay's SQL shares. Split from ``outbox.store.relay`` to keep modules small; see that module for the fencing
rules (epochs bumped on every change of owner; all times from the database clock)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy.dialects.postgresql import insert

from outbox.errors import DatabaseUnavailableError
from outbox.schema import relay_instance, relay_lease
from outbox.store import translate_errors
from outbox.version import VERSION


@contextmanager
def relay_db(doing: str) -> Iterator[None]:
    """translate_errors, plus: a connection the server ended (idle-in-transaction timeout, admin kill, failover)
    is transient for the relay, whatever SQLSTATE it came with: the work is retried on a new connection."""
    try:
        with translate_errors(doing):
            yield
    except DatabaseUnavailableError:
        raise
    except Exception as exc:
        cause = exc.__cause__
        if isinstance(cause, sa_exc.DBAPIError) and (cause.connection_invalidated or _conn_gone(cause)):
            raise DatabaseUnavailableError(f"database connection lost while {doing}: {cause.orig}") from cause
        raise


def _conn_gone(exc: sa_exc.DBAPIError) -> bool:
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return sqlstate.startswith(("08", "57P")) or sqlstate == "25P03"  # connection, shutdown, idle-in-txn timeout


class LeaseQueries:
    """Mixed into ``RelayStore``; needs ``self._engine``."""

    _engine: sa.Engine

    # --- leases ------------------------------------------------------------------------------------------
    def ensure_leases(self, shards: int) -> None:
        rows = [{"shard": s} for s in range(shards)]
        with relay_db("creating lease rows"), self._engine.begin() as c:
            c.execute(insert(relay_lease).values(rows).on_conflict_do_nothing(index_elements=["shard"]))

    def acquire(self, owner: str, shards: Sequence[int], ttl_s: float) -> dict[int, int]:
        """Take each of ``shards`` that is free or expired; returns ``{shard: new epoch}`` for those taken.

        The epoch is bumped on every change of owner, which fences the previous owner's database writes.
        """
        if not shards:
            return {}
        lt = relay_lease
        free = sa.or_(lt.c.owner.is_(None), lt.c.expires_at.is_(None), lt.c.expires_at < sa.func.now(),
                      lt.c.owner == owner)
        upd = (lt.update().where(lt.c.shard.in_(list(shards)), free)
               .values(owner=owner, epoch=lt.c.epoch + 1, expires_at=sa.func.now() + _seconds(ttl_s),
                       renewed_at=sa.func.now())
               .returning(lt.c.shard, lt.c.epoch))
        with relay_db("acquiring leases"), self._engine.begin() as c:
            return {int(s): int(e) for s, e in c.execute(upd).all()}

    def renew(self, owner: str, held: Mapping[int, int], ttl_s: float) -> dict[int, int]:
        """Extend the leases still ours at the same epoch; returns the ones renewed (the others are lost)."""
        if not held:
            return {}
        lt = relay_lease
        upd = (lt.update().where(lt.c.owner == owner, lt.c.shard.in_(list(held)))
               .values(expires_at=sa.func.now() + _seconds(ttl_s), renewed_at=sa.func.now())
               .returning(lt.c.shard, lt.c.epoch))
        with relay_db("renewing leases"), self._engine.begin() as c:
            got = {int(s): int(e) for s, e in c.execute(upd).all()}
        return {s: e for s, e in got.items() if held.get(s) == e}

    def release(self, owner: str, held: Mapping[int, int]) -> None:
        """Give leases up at once (graceful shutdown / rebalance), so the next owner need not wait the TTL."""
        if not held:
            return
        lt = relay_lease
        with relay_db("releasing leases"), self._engine.begin() as c:
            for s, e in held.items():
                c.execute(lt.update().where(lt.c.shard == s, lt.c.owner == owner, lt.c.epoch == e)
                          .values(owner=None, expires_at=None))

    # --- instances ---------------------------------------------------------------------------------------
    def heartbeat(self, instance_id: str, host: str, pid: int, ttl_s: float, *, version: str = VERSION) -> list[str]:
        """Record that this instance is alive, and which process and version it is (a pinned instance id is
        reused by its restarts); returns the ids of live instances (sorted), self included."""
        it = relay_instance
        up = insert(it).values(instance_id=instance_id, host=host, pid=pid, version=version)
        up = up.on_conflict_do_update(index_elements=["instance_id"], set_={
            "heartbeat_at": sa.func.now(), "host": host, "pid": pid, "version": version})
        live = (sa.select(it.c.instance_id).where(it.c.heartbeat_at > sa.func.now() - _seconds(ttl_s))
                .order_by(it.c.instance_id))
        with relay_db("heartbeating"), self._engine.begin() as c:
            c.execute(up)
            # Forget instances dead for long: they would only clutter `outbox status`.
            c.execute(it.delete().where(it.c.heartbeat_at < sa.func.now() - _seconds(max(3600.0, ttl_s * 10))))
            return [str(r[0]) for r in c.execute(live).all()]

    def deregister(self, instance_id: str) -> None:
        with relay_db("deregistering"), self._engine.begin() as c:
            c.execute(relay_instance.delete().where(relay_instance.c.instance_id == instance_id))


def _seconds(s: float) -> sa.ColumnElement[Any]:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(s), sa.Float))
