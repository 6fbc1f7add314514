"""The fault suite's relay (chaos/faulty_relay.py): its own switches, read from FAULTY_RELAY_* variables, and the
hooks they build (kill at a step of the Nth batch; mark before the Kafka commit). The shipped relay has neither
(tests/unit/relay/test_config.py)."""

from __future__ import annotations

import signal
import threading
from typing import cast

import pytest

from chaos.faulty_relay import Broken, FaultHooks, FaultSettings, main
from outbox.store.relay import Mark, RelayStore
from relay.hooks import NO_HOOKS, InFlight, Step

BATCH = InFlight(shard=2, owner="me", epoch=5, ids=(10, 11, 12))


def test_switches_parse() -> None:
    s = FaultSettings.from_env({"FAULTY_RELAY_KILL_AT": "mid_mark", "FAULTY_RELAY_KILL_BATCH": "3"})
    assert s.kill_at is Step.MID_MARK and s.kill_batch == 3
    assert s.kill_signal is signal.SIGKILL and s.broken is None
    s = FaultSettings.from_env({"FAULTY_RELAY_KILL_SIGNAL": "STOP", "FAULTY_RELAY_BROKEN": "mark_before_commit"})
    assert s.kill_at is None and s.kill_signal is signal.SIGSTOP and s.broken is Broken.MARK_BEFORE_COMMIT
    assert FaultSettings.from_env({}) == FaultSettings()


@pytest.mark.parametrize(("var", "value"), [
    ("FAULTY_RELAY_KILL_AT", "sometime"), ("FAULTY_RELAY_KILL_BATCH", "0"), ("FAULTY_RELAY_KILL_BATCH", "two"),
    ("FAULTY_RELAY_KILL_SIGNAL", "TERM"), ("FAULTY_RELAY_BROKEN", "mark_after_commit"),
])
def test_bad_values_fail_naming_the_variable(var: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=var):
        FaultSettings.from_env({var: value})
    assert main([], {var: value}) == 3
    assert var in capsys.readouterr().err


def test_kills_at_the_step_of_the_nth_batch_of_the_process_only() -> None:
    sent: list[int] = []
    hooks = FaultHooks(FaultSettings(Step.AFTER_COMMIT, kill_batch=2), kill=lambda _pid, sig: sent.append(sig))
    hooks.batch_started()
    hooks.at(Step.AFTER_COMMIT, BATCH)
    assert not sent and not hooks.armed(Step.AFTER_COMMIT)
    other = threading.Thread(target=hooks.batch_started)  # the 2nd batch of the process, on another worker
    other.start()
    other.join()
    hooks.at(Step.AFTER_COMMIT, BATCH)
    assert not sent, "the armed batch is the other thread's"
    hooks.batch_started()  # the 3rd
    assert not hooks.armed(Step.AFTER_COMMIT)
    stopped = FaultHooks(FaultSettings(Step.MID_PRODUCE, kill_signal=signal.SIGSTOP),
                         kill=lambda _pid, sig: sent.append(sig))
    stopped.batch_started()
    assert stopped.armed(Step.MID_PRODUCE) and not stopped.armed(Step.MID_MARK)
    stopped.at(Step.MID_MARK, BATCH)
    stopped.at(Step.MID_PRODUCE, BATCH)
    assert sent == [signal.SIGSTOP]
    stopped.at(Step.MID_PRODUCE, BATCH)  # woken up (SIGCONT): carries on as the zombie under test
    assert sent == [signal.SIGSTOP]


class _Store:
    def __init__(self) -> None:
        self.marked: list[tuple[int, str, int, list[Mark]]] = []

    def mark_published(self, shard: int, owner: str, epoch: int, marks: list[Mark]) -> int:
        self.marked.append((shard, owner, epoch, marks))
        return len(marks)


def test_the_broken_relay_marks_each_batch_before_producing_it() -> None:
    store = _Store()
    hooks = FaultHooks(FaultSettings(broken=Broken.MARK_BEFORE_COMMIT), mark_early=cast(RelayStore, store))
    hooks.batch_started()
    for step in Step:
        hooks.at(step, BATCH)
    hooks.at(Step.BEFORE_PRODUCE, InFlight(2, "me", 5, ()))  # nothing to mark
    assert store.marked == [(2, "me", 5, [Mark(10, -1, -1), Mark(11, -1, -1), Mark(12, -1, -1)])]


def test_the_relays_own_hooks_do_nothing() -> None:
    NO_HOOKS.batch_started()
    assert not any(NO_HOOKS.armed(step) for step in Step)
    for step in Step:
        NO_HOOKS.at(step, BATCH)
