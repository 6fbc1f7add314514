"""CPU accounting for the benchmarks: per-process CPU seconds (nanosecond schedstat) and a quiet-machine wait."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil


def await_quiet(max_wait: float, quiet: float) -> float:
    """Wait (up to ``max_wait`` s) until other work leaves the CPUs idle (busy share at most ``quiet``); the
    caller's own workers are parked meanwhile, so what is busy now is someone else. Returns the seconds waited."""
    started = time.monotonic()
    while psutil.cpu_percent(interval=0.5) / 100 > quiet and time.monotonic() - started < max_wait:
        pass
    return round(time.monotonic() - started, 1)


def process_cpu(pid: int) -> float:
    """CPU seconds of a local process; /proc/<pid>/schedstat has nanoseconds, psutil only clock ticks."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)


def cpu_of(procs: list[Any]) -> dict[int, float]:
    """CPU seconds so far of each process, by pid (a process that exited meanwhile is left out)."""
    out: dict[int, float] = {}
    for p in procs:
        with contextlib.suppress(psutil.Error):  # the process exited
            out[p.pid] = process_cpu(p.pid)
    return out


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two ``cpu_of`` samples. A process that started in between counts from zero; one that
    exited is lost (rare in the benches: writers keep their connection, so backends live as long as the run)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())
