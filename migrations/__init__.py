"""kafka-outbox's Alembic migrations, shipped inside the wheel.

Run them standalone with ``outbox migrate upgrade``, or plug them into a host application's own Alembic env:
add :func:`versions_location` to the host's ``version_locations`` and upgrade ``heads`` (our revisions form their
own branch, labelled ``outbox``), and include :data:`outbox.schema.metadata` in the host's ``target_metadata``
so autogenerate leaves our tables alone (or pass :func:`exclude_outbox` as ``include_name``). See
docs/write-side.md "Using our migrations in your Alembic env".
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.environment import NameFilterParentNames, NameFilterType

HERE = Path(__file__).resolve().parent
BRANCH = "outbox"
VERSION_TABLE = "alembic_version"


def script_location() -> str:
    return str(HERE)


def versions_location() -> str:
    """The directory holding our revision files, for a host env's ``version_locations``."""
    return str(HERE / "versions")


def alembic_config(url: str, schema: str = "outbox") -> Config:
    """An Alembic Config for our standalone env, bound to ``url`` and the target ``schema``."""
    cfg = Config()
    cfg.set_main_option("script_location", script_location())
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["outbox_schema"] = schema
    return cfg


def schema_name() -> str:
    """The schema our revisions create objects in, read from the running Alembic context."""
    from alembic import context

    try:
        cfg = context.config
    except AttributeError:  # no Alembic command is running (e.g. a host's own compare_metadata call)
        return "outbox"
    value = cfg.attributes.get("outbox_schema") or context.get_x_argument(as_dictionary=True).get("outbox_schema")
    return str(value or "outbox")


def exclude_outbox(name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames) -> bool:
    """An ``include_name`` hook for a host's autogenerate: skip our schema (and so our tables) entirely.

    Needed only when the host env sets ``include_schemas=True``; otherwise autogenerate never reflects the
    ``outbox`` schema. Our schema name comes from ``-x outbox_schema=...`` / the Config attribute, default outbox.
    """
    ours = schema_name()
    if type_ == "schema":
        return name != ours
    return parent_names.get("schema_name") != ours
