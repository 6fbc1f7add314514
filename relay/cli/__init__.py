"""The single ``outbox`` command. Each group of subcommands lives in its own module and registers itself here.

Installed as the ``outbox`` console script through :mod:`relay.console` (which names the extra to install when
a dependency is missing). ``outbox --version`` prints the installed version.

Exit codes (documented in README "Operations"): 0 success, 1 discrepancies / check failed, 2 could not run
(bad arguments, unreachable services, schema behind), 3 configuration error, 130 interrupted.
"""

from __future__ import annotations

from typing import Annotated

import typer

from outbox.version import VERSION
from relay.cli import audit, daemon, migrate, ops, ops_dlq

app = typer.Typer(
    name="outbox",
    help="kafka-outbox: transactional outbox for Postgres and Kafka, with a relay and a zero-loss reconciler.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"kafka-outbox {VERSION}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version of kafka-outbox and exit.")] = False,
) -> None:
    pass


for module in (migrate, daemon, audit, ops, ops_dlq):
    module.register(app)


def main() -> None:
    app()
