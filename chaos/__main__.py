"""``python -m chaos [--tier small|full] [--seed N] [--broken] [--out chaos-results.json]``."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from chaos.faults import FULL, SMALL
from chaos.run import run


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos")
    ap.add_argument("--tier", choices=["small", "full"], default="full")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--broken", action="store_true", help="run the deliberately broken relay (must be caught)")
    ap.add_argument("--out", default="chaos-results.json")
    ap.add_argument("--home", default=None)
    args = ap.parse_args()
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="chaos-"))
    outcome = run(FULL if args.tier == "full" else SMALL, home, seed=args.seed, broken=args.broken)
    Path(args.out).write_text(json.dumps(outcome.results, indent=2, default=str))
    print(f"results: {args.out} (logs under {home})")
    if args.broken:
        return 0 if not outcome.clean else 1  # the broken relay must be caught
    return 0 if outcome.clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
