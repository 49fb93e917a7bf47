"""The ``zastava`` command. Each package owns its subcommands; this module only gathers them.

A package takes part by having a ``cli`` module with ``register(subparsers)``, which adds
its command and sets ``handler`` on its parsers, and ``USER_ERRORS``, the exception types
that mean "the user can fix this". Handlers return an exit status. Such errors (and bad
input, ``ValueError``; missing or unreadable files, ``OSError``) are printed as one line
saying what was wrong, without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

# (subcommand, module that registers it). Later packages add theirs here.
COMMANDS: tuple[str, ...] = (
    "pki.cli",
    "sync.bundle.cli",
    "sync.relay.cli",
    "core.cli",
    "edge.cli",
    "installer.demo",
    "installer.media_cli",
    "installer.turn",
    "installer.netbed",
)

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> tuple[argparse.ArgumentParser, tuple[type[BaseException], ...]]:
    parser = argparse.ArgumentParser(
        prog="zastava",
        description="Zastava: chat, directory and video calls for plants that stay off the "
        "internet. Every node (edge, relay, core) is run and administered with this command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    errors: list[type[BaseException]] = [ValueError, OSError]
    for name in COMMANDS:
        module = importlib.import_module(name)
        module.register(sub)
        errors.extend(getattr(module, "USER_ERRORS", ()))
    return parser, tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser, user_errors = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # A command group without its subcommand: show that group's help.
        (getattr(args, "group_parser", None) or parser).print_help()
        return 2
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("zastava: interrupted", file=sys.stderr)
        return 130
    except user_errors as e:
        print(f"zastava: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
