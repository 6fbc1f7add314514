"""The single ``outbox`` command. Each group of subcommands lives in its own module and registers itself here.

Exit codes (documented in README "Operations"): 0 success, 1 discrepancies / check failed, 2 could not run
(bad arguments, unreachable services, schema behind), 3 configuration error, 130 interrupted.
"""

from __future__ import annotations

import typer

from relay.cli import audit, daemon, migrate, ops

app = typer.Typer(
    name="outbox",
    help="kafka-outbox: transactional outbox for Postgres and Kafka, with a relay and a zero-loss reconciler.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (migrate, daemon, audit, ops):
    module.register(app)


def main() -> None:
    app()
