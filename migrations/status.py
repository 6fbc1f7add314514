"""Where our revisions are recorded, and whether the schema is at our head: the one owner of that rule.

The relay's start-up check (relay/startup.py), ``outbox migrate check | current | upgrade | downgrade``
(relay/cli/migrate.py) and ``outbox roles sql`` all ask :func:`schema_status`.

Two layouts record our revisions:

* **own**: ``outbox migrate upgrade`` records them in the outbox schema's own version table,
  ``<schema>.alembic_version``, where nothing else is recorded.
* **host**: a host application runs our revisions from its own Alembic env (docs/write-side.md, "Using our
  migrations in your Alembic env"), which records them in *its* version table beside its own revisions; by
  default ``alembic_version`` in the first schema of its search path (usually ``public``).

Which table holds them: the one named by ``OUTBOX_VERSION_TABLE`` (``[schema.]table``) when set; else the outbox
schema's own table if it records one of our revision ids; else the first ``alembic_version`` table on the search
path, then in ``public``, that does (and only while the outbox schema has our tables: a host table may record
the revisions of another outbox schema of the database); else the own table (nothing applied yet). Our revision
ids are those of this package's script directory. Set ``OUTBOX_VERSION_TABLE`` when the host's table has another
name, or lies in a schema outside the search path of the login that checks it.

The rule: the schema is **up to date** when every head of ours is recorded there; **ahead** when the own table
records a revision this code does not know (a newer kafka-outbox migrated it); else **behind**. A host table's
other revisions are the host's, and never make it ahead.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import Enum

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from migrations import VERSION_TABLE, script_location
from outbox.schema import event

VERSION_TABLE_VAR = "OUTBOX_VERSION_TABLE"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"  # a plain SQL identifier Postgres keeps whole (63 characters)
VERSION_TABLE_PATTERN = rf"^(?:{_IDENT}\.)?{_IDENT}$"
"""What ``OUTBOX_VERSION_TABLE`` accepts: ``table`` or ``schema.table``, plain identifiers."""
_PUBLIC = "public"


@dataclass(frozen=True, slots=True)
class VersionTable:
    """An Alembic version table. ``schema`` None: unqualified, found through the search path (as Alembic does)."""

    schema: str | None
    name: str = VERSION_TABLE

    @classmethod
    def parse(cls, text: str) -> VersionTable:
        """``[schema.]table`` as ``OUTBOX_VERSION_TABLE`` gives it; ValueError naming the variable otherwise."""
        value = text.strip()
        if not re.fullmatch(VERSION_TABLE_PATTERN, value):
            raise ValueError(f"{VERSION_TABLE_VAR} must be [schema.]table, plain SQL identifiers of at most 63 "
                             f"characters each, got {text!r}")
        schema, _, name = value.rpartition(".")
        return cls(schema or None, name)

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


class Layout(Enum):
    OWN = "own"  # `outbox migrate` records our revisions in the outbox schema's own version table
    HOST = "host"  # a host application's Alembic env records them in its version table


class SchemaState(Enum):
    UP_TO_DATE = "up to date"
    BEHIND = "behind"
    AHEAD = "ahead"  # the own table has revisions this code does not know (a newer version migrated it)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """What :func:`schema_status` found. ``current``: the revisions of ours recorded in ``table`` (in the own
    layout, also those this code does not know); ``heads``: this code's heads."""

    state: SchemaState
    current: tuple[str, ...]
    heads: tuple[str, ...]
    table: VersionTable
    layout: Layout

    @property
    def where(self) -> str:
        """Where our revisions are recorded, in the words of a message."""
        if not self.current:
            return f"none of ours in {self.table}"
        if self.layout is Layout.HOST:
            return f"recorded in {self.table} by your application's own Alembic env"
        return f"recorded in {self.table}"

    @property
    def upgrade_hint(self) -> str:
        """What brings the schema to this code's head, for a message."""
        if self.state is SchemaState.AHEAD:
            return "upgrade this code"
        if self.layout is Layout.HOST:
            return "run `alembic upgrade heads` in your application's Alembic env"
        if not self.current:
            return ("run `outbox migrate upgrade` (or, if your application's own Alembic env runs our migrations, "
                    f"`alembic upgrade heads` there; {VERSION_TABLE_VAR} names its version table if it is not "
                    "found on the search path)")
        return "run `outbox migrate upgrade`"


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory(script_location())


def our_revisions() -> frozenset[str]:
    """Every revision id of ours (this package's script directory)."""
    return frozenset(r.revision for r in _script().walk_revisions())


def our_heads() -> tuple[str, ...]:
    return tuple(sorted(_script().get_heads()))


def own_table(schema: str) -> VersionTable:
    """The version table ``outbox migrate`` records our revisions in."""
    return VersionTable(schema, VERSION_TABLE)


def schema_status(conn: sa.Connection, schema: str = "outbox", version_table: VersionTable | None = None
                  ) -> SchemaStatus:
    """Find where our revisions are recorded (``version_table``, the ``OUTBOX_VERSION_TABLE`` setting, or see the
    module docstring) and compare them with this code's heads.

    Reads only catalogs and version tables. A version table the login may not read raises the driver's error
    (the caller translates it): when it was only a candidate, only if no readable one records our revisions."""
    known, heads = our_revisions(), our_heads()
    own = own_table(schema)
    if version_table is not None:
        table = _resolve(conn, version_table)
        recorded = _recorded(conn, table)
    else:
        table, recorded = _discover(conn, own, known)
    layout = Layout.OWN if table == own else Layout.HOST
    unknown = set(recorded) - known
    if layout is Layout.HOST:
        recorded = tuple(r for r in recorded if r in known)  # the others are the host's own
    if layout is Layout.OWN and unknown:
        state = SchemaState.AHEAD
    elif set(heads) <= set(recorded):
        state = SchemaState.UP_TO_DATE
    else:
        state = SchemaState.BEHIND
    return SchemaStatus(state, tuple(sorted(recorded)), heads, table, layout)


def _resolve(conn: sa.Connection, table: VersionTable) -> VersionTable:
    """An unqualified table in the schema where Alembic finds it: the first existing one of the search path."""
    if table.schema is not None:
        return table
    return VersionTable(sa.inspect(conn).default_schema_name, table.name)


def _recorded(conn: sa.Connection, table: VersionTable) -> tuple[str, ...]:
    """The revisions ``table`` records; none if it does not exist. In a savepoint: a refused read leaves the
    caller's transaction usable."""
    with conn.begin_nested():
        ctx = MigrationContext.configure(conn, opts={"version_table": table.name,
                                                     "version_table_schema": table.schema})
        return tuple(ctx.get_current_heads())


def _discover(conn: sa.Connection, own: VersionTable, known: frozenset[str]
              ) -> tuple[VersionTable, tuple[str, ...]]:
    search_path = conn.execute(sa.select(sa.func.current_schemas(False))).scalar_one() or []
    candidates = [own, *(VersionTable(s, VERSION_TABLE) for s in [*search_path, _PUBLIC])]
    inspector = sa.inspect(conn)
    ours_there = inspector.has_table(event.name, schema=own.schema)
    refused: sa.exc.DBAPIError | None = None
    own_recorded: tuple[str, ...] = ()
    for table in dict.fromkeys(candidates):  # in order, once each
        if (table != own and not ours_there) or not inspector.has_table(table.name, schema=table.schema):
            continue
        try:
            recorded = _recorded(conn, table)
        except sa.exc.ProgrammingError as exc:  # e.g. permission denied: another candidate may still answer
            refused = refused or exc
            continue
        if table == own:
            own_recorded = recorded
        if known & set(recorded):
            return table, recorded
    if refused is not None:
        raise refused
    return own, own_recorded
