"""`make bench`: every benchmark, one after the other, each against a reference measured in the same run.

Each module writes its own JSON under bench/results/; this collects them into bench/results/summary.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
BENCHES = [("write", "write.json"), ("relay", "relay.json"), ("backlog", "backlog-2.json"),
           ("reconcile", "reconcile.json"), ("prune", "prune.json")]


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    summary: dict[str, object] = {}
    failed = []
    for name, out in BENCHES:
        started = time.monotonic()
        print(f"== bench.{name}", flush=True)
        rc = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        path = RESULTS / out
        summary[name] = {"exit_code": rc, "seconds": round(time.monotonic() - started, 1),
                         "result": json.loads(path.read_text()) if path.exists() and rc == 0 else None}
        if rc != 0:
            failed.append(name)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: v["result"] for k, v in summary.items()}, indent=2, default=str))  # type: ignore[index]
    from bench import readme

    readme.main()
    if failed:
        print(f"benchmarks failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
