"""The ``switchbert`` command line. Each subsystem registers its own subcommands here, explicitly.

Options, positionals and ``key=value`` overrides may come in any order after the command
(``switchbert pretrain CONFIG --resume train.epochs=1 -v``): every subcommand parser is an
:class:`ArgumentParser` (``commands/parsing.py``), which parses intermixed arguments. ``-v`` works
before or after the command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

from switchbert.commands.parsing import ArgumentParser, add_verbose_everywhere, add_verbose, run_command


def package_version() -> str:
    """The installed distribution's version, else the source tree's ``switchbert.__version__``."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("switchbert")
    except PackageNotFoundError:
        import switchbert

        return switchbert.__version__


def build_parser() -> argparse.ArgumentParser:
    from switchbert.commands import analysis, configs, data, demo, import_checkpoint, models, smoke, study, train

    parser = ArgumentParser(
        prog="switchbert",
        description="Switch-BERT and the multimodal BERTs it is compared with: build, train, evaluate, inspect.",
    )
    add_verbose(parser, top=True)
    parser.add_argument("--version", action="version", version=f"switchbert {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    # Each subsystem adds its own commands; the order here is the order of ``--help``.
    for module in (models, configs, smoke, data, train, analysis, import_checkpoint, demo, study):
        module.register(sub)
    add_verbose_everywhere(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit code so tests can call it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    return run_command(f"switchbert {args.command}", args.func, args)


if __name__ == "__main__":
    sys.exit(main())
