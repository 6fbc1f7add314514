"""The ``outbox`` console script: the command line, or which extra to install when its dependencies are missing.

The core install (writers) brings none of the command line's dependencies, and a command's own imports
(``outbox relay`` loads Kafka, Prometheus and the settings classes only when it runs) may need more than the
extra that was installed. Either way a ``ModuleNotFoundError`` for a module an extra installs
(:mod:`outbox.extras`) becomes one line naming the extra, and exit code 2 ("could not run"), instead of a
traceback. Any other missing module is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

from outbox.extras import install_hint, is_optional

EXIT_COULD_NOT_RUN = 2
AUDIT_COMMANDS = frozenset({"reconcile", "verify", "trace"})  # what [audit] is for; [relay] covers every command


def main() -> None:
    args = sys.argv[1:]
    try:
        from relay.cli import main as cli

        cli()
    except ModuleNotFoundError as exc:
        if not is_optional(exc):
            raise
        print(missing_message(exc, args), file=sys.stderr, flush=True)
        sys.exit(EXIT_COULD_NOT_RUN)


def missing_message(exc: ModuleNotFoundError, args: list[str]) -> str:
    command = next((a for a in args if not a.startswith("-")), None)
    prog = f"outbox {command}" if command else "outbox"
    if "pip install" in str(exc):  # raised by a library module that already names its extra
        return f"{prog}: {exc}"
    if command is None:
        return (f"outbox: the module {exc.name!r} is not installed; the outbox command comes with the [relay] extra "
                f"(operators; auditors may take [audit]): {install_hint('relay')}")
    extra = "audit" if command in AUDIT_COMMANDS else "relay"
    return (f"{prog}: the module {exc.name!r} is not installed; this command comes with the [{extra}] extra: "
            f"{install_hint(extra)}")
