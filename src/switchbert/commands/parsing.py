"""What every ``switchbert`` command parses and reports with: the argument parser and the error policy.

Its own module, below ``switchbert.cli`` (which registers the commands) and the subsystems' ``cli``
modules (which build their parsers with it), so that neither imports the other.

Options, positionals and ``key=value`` overrides may come in any order after the command
(``switchbert pretrain CONFIG --resume train.epochs=1 -v``): every subcommand parser is an
:class:`ArgumentParser`, which parses intermixed arguments. ``-v`` works before or after the command.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Any


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that accepts options between positionals and suggests close choices.

    A leaf parser (one without subcommands) parses with ``parse_known_intermixed_args``, so
    ``CONFIG --resume a=1`` and ``CONFIG a=1 --resume`` mean the same. A parser with subcommands parses
    as argparse does (intermixed parsing cannot hold a subparser), and hands the rest to the subcommand,
    which is a leaf and parses intermixed. A misspelt choice (command, ``--task``...) gets "did you mean".
    """

    _parsing_intermixed = False

    def parse_known_args(self, args: Any = None, namespace: Any = None):  # type: ignore[override]
        # parse_known_intermixed_args calls parse_known_args twice itself: the guard stops the recursion.
        if self._subparsers is not None or self._parsing_intermixed:
            return super().parse_known_args(args, namespace)
        self._parsing_intermixed = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing_intermixed = False

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
            if close:
                choices = ", ".join(map(repr, action.choices))
                raise argparse.ArgumentError(
                    action, f"invalid choice: {value!r}; did you mean {close[0]!r}? (choose from {choices})")
        super()._check_value(action, value)


def add_verbose(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-v/--verbose`` on ``parser``. On a subcommand its default is SUPPRESS, so that an absent
    ``-v`` after the command does not overwrite one given before it."""
    parser.add_argument("-v", "--verbose", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="debug logging; tracebacks on errors")


def add_verbose_everywhere(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                if not any("--verbose" in a.option_strings for a in sub._actions):
                    add_verbose(sub)
                add_verbose_everywhere(sub)


def error_message(e: BaseException) -> str:
    """The text of an exception for a one-line message (a KeyError's own text, without repr quotes)."""
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        return e.args[0]
    return str(e)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """``warning: MESSAGE`` (a data warning's message names its file), instead of Python's two lines with
    the library's own file and source line."""
    text = " ".join(str(message).split("\n"))
    return f"warning: {text}\n"


def run_command(prog: str, func: Any, args: argparse.Namespace) -> int:
    """Runs ``func(args)``; errors end with one line on stderr (exit 2 for user errors, 1 otherwise),
    or with the traceback under ``-v``."""
    import warnings

    warnings.formatwarning = _one_line_warning  # the command line's warnings: one line each, no source echo
    try:
        return int(func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as e:
        # User errors (bad config, bad data, missing files) end with a message, not a traceback.
        if getattr(args, "verbose", False):
            raise
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of our output went away (`... | head`): stop quietly, as a command killed by SIGPIPE
        # does, and point stdout at /dev/null so that flushing it at exit does not fail a second time.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # no real stdout to redirect (captured, closed)
            pass
        return 141
    except OSError as e:  # the environment (a full disk, permissions): the message names the file
        if getattr(args, "verbose", False):
            raise
        print(f"{prog}: error: {error_message(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # anything else is a bug or an environment problem: say how to see more
        if getattr(args, "verbose", False):
            raise
        print(f"{prog}: unexpected error: {type(e).__name__}: {error_message(e)}\n"
              f"(run again with -v to see the traceback)", file=sys.stderr)
        return 1
