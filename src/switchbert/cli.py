"""The ``switchbert`` command line. Each subsystem registers its own subcommands here, explicitly."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    from switchbert import cli_models, demo, smoke
    from switchbert.analysis import cli as analysis_cli
    from switchbert.convert import cli as convert_cli
    from switchbert.data import cli as data_cli
    from switchbert.train import cli as train_cli

    parser = argparse.ArgumentParser(
        prog="switchbert",
        description="Switch-BERT and the multimodal BERTs it is compared with: build, train, evaluate, inspect.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Each subsystem adds its own commands; the order here is the order of ``--help``.
    for module in (cli_models, smoke, data_cli, train_cli, analysis_cli, convert_cli, demo):
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code so tests can call it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # User errors (bad config, bad data, missing files) end with a message, not a traceback.
        if args.verbose:
            raise
        print(f"switchbert {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
