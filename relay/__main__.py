"""``python -m relay [flags]`` is ``outbox relay [flags]``."""

from __future__ import annotations

import sys

from relay.cli import app

if __name__ == "__main__":
    app(["relay", *sys.argv[1:]], prog_name="python -m relay")
