"""Every flag a configuration error names exists on the command that printed it (`outbox relay --concurrency 0`
used to answer "No such option" to the relay's own advice), and every flag that exists is named."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.core import TyperGroup

from outbox.errors import ConfigError
from relay import startup
from relay.cli import app
from relay.config import RELAY_FLAGS, STATUS_FLAGS, RelaySettings, StatusSettings

BASE = {"OUTBOX_DATABASE_URL": "postgresql://u:pw@h/db", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092"}
# Values that some field refuses: each field is tried with each, as a flag override and as its variable.
BAD = ["!not valid!", "", "-5", "0", "99999999", "..", "1e9", "s" * 300]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    return {opt for p in group.commands[command].params for opt in p.opts if opt.startswith("--")}


def _relay_messages() -> dict[str, list[str]]:
    """field -> the messages of the configuration errors its bad values cause."""
    out: dict[str, list[str]] = {}
    good = RelaySettings.load(environ=BASE)
    for field in RelaySettings.model_fields:
        if field == "kafka_extra":
            continue
        var = good.env_name(field)
        for value in BAD:
            attempts: list[dict[str, Any]] = [{"overrides": {field: value}, "environ": BASE},
                                              {"environ": {**BASE, var: value}}]
            for kw in attempts:
                try:
                    RelaySettings.load(**kw)
                except ConfigError as exc:
                    out.setdefault(field, []).append(str(exc))
    return out


def test_every_flag_a_relay_configuration_error_names_exists_on_outbox_relay() -> None:
    options = _options("relay")
    messages = _relay_messages()
    # Fields that accept any string have no bad value here; every other one was exercised.
    assert set(RelaySettings.model_fields) - set(messages) <= {"kafka_extra", "http_host"}
    more = []
    for kw in ({"overrides": {"heartbeat_s": 5.0}, "environ": BASE},  # the cross-field checks
               {"kafka_config": {"acks": "1"}, "environ": BASE},  # exactly-once settings
               {"environ": {"OUTBOX_DATABASE_URL": "postgresql://h/d"}}):  # a missing one
        with pytest.raises(ConfigError) as exc:
            RelaySettings.load(**kw)
        more.append(str(exc.value))
    s = RelaySettings.load(environ=BASE)
    more += [str(startup.checkpoint_topic_refused(s, kind, "X: y")) for kind in ("replication", "name", "denied",
                                                                                 "policy")]
    more.append(str(startup.kafka_config_error({"linger.ms": "abc"}, "Invalid value", lambda k, v: True)))
    more.append(str(startup.kafka_config_error({"a": "1", "b": "2"}, "Failed to create", lambda k, v: False)))
    named: dict[str, str] = {}
    for text in [m for ms in messages.values() for m in ms] + more:
        for flag in FLAG.findall(text):
            named.setdefault(flag, text)
    missing = {flag: text for flag, text in named.items() if flag not in options}
    assert not missing, f"messages name flags `outbox relay` does not have: {missing}"
    assert "--kafka-config" in named  # the passthrough errors name both ways to set them


def test_fields_without_a_flag_are_named_by_their_variable_only() -> None:
    messages = _relay_messages()
    for field in ("concurrency", "poll_max_s", "claim_floor", "wake_interval_s", "stats_interval_s",
                  "kafka_timeout_s", "checkpoint_replication"):
        var = f"OUTBOX_RELAY_{field.upper()}"
        assert messages.get(field), field
        for text in messages[field]:
            assert var in text and not FLAG.search(text), text


def test_every_flag_of_outbox_relay_is_named_by_its_errors() -> None:
    # The other direction: a flag added to `outbox relay` must be added to RELAY_FLAGS, or its errors name
    # only the variable while the user typed the flag.
    options = _options("relay") - {"--kafka-config", "--help"}
    assert set(RELAY_FLAGS.values()) == options
    assert set(STATUS_FLAGS.values()) == _options("status") - {"--format", "--help"}
    for field in RELAY_FLAGS:
        assert field in RelaySettings.model_fields, field


def test_every_flag_a_status_configuration_error_names_exists_on_outbox_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    options = _options("status")
    monkeypatch.setenv("OUTBOX_DATABASE_URL", "postgresql://h/d")
    texts = []
    for field in StatusSettings.model_fields:
        for value in BAD:
            try:
                StatusSettings.load({field: value})
            except ConfigError as exc:
                texts.append(str(exc))
    assert any("--schema" in t for t in texts) and any("--shards" in t for t in texts)
    for text in texts:
        assert set(FLAG.findall(text)) <= options, text
