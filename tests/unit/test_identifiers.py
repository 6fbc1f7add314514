"""One rule for SQL identifiers (outbox.config.is_identifier), fed to every entry point that takes one."""

from __future__ import annotations

import pytest

from outbox import errors
from outbox.config import MAX_IDENT, Settings, is_identifier
from outbox.inbox_args import check_schema as inbox_schema
from outbox.store.roles import roles_sql
from relay.cli.ops_args import check_schema as cli_schema
from relay.config import RelaySettings

BAD = ["outbox\n", "\noutbox", " outbox", "outbox ", "out-box", "1outbox", "", "outböx", "o" * (MAX_IDENT + 1)]
GOOD = ["outbox", "_o", "Outbox_2", "o" * MAX_IDENT]


@pytest.mark.parametrize("value", BAD)
def test_every_entry_point_refuses_what_is_not_a_plain_identifier(value: str) -> None:
    assert not is_identifier(value)
    with pytest.raises(errors.ConfigError):
        Settings(schema=value)
    with pytest.raises(errors.ConfigError):
        inbox_schema(value)
    with pytest.raises(errors.ConfigError):
        cli_schema(value)
    with pytest.raises(ValueError):  # pydantic says why in its own words
        RelaySettings(database_url="postgresql://u@h/d", bootstrap_servers="h:1", db_schema=value)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="plain SQL identifier"):
        roles_sql(schema=value)


@pytest.mark.parametrize("value", GOOD)
def test_every_entry_point_takes_a_plain_identifier(value: str) -> None:
    assert is_identifier(value)
    assert Settings(schema=value).schema == value
    assert inbox_schema(value) == cli_schema(value) == value
    assert RelaySettings(database_url="postgresql://u@h/d", bootstrap_servers="h:1",  # type: ignore[call-arg]
                         db_schema=value).db_schema == value
    assert f'"{value}"' in roles_sql(schema=value)
