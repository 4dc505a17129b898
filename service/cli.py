"""`factpatch` command line: serve, api, worker, train, eval, edit, prepare-model."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

# Sub-command modules, in the order `factpatch --help` lists them.  A module that is not
# written yet is skipped, so the CLI keeps working while the project grows.
COMMANDS = (
    "service.commands.serve",
    "service.commands.prepare",
    "service.commands.train",
    "service.commands.data",
    "service.commands.eval",
    "service.commands.edit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factpatch",
        description="Correct the facts a language model knows, live (MALMEN).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except ValidationError as exc:  # a FACTPATCH_* setting (service.settings) is invalid
        print(f"factpatch: invalid configuration: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
