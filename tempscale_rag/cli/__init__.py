"""The `tempscale-rag` command: index, search, info, repair, eval, collapse, calibrate, qdrant-upload.

Each subcommand lives in its own module with `register(subparsers)` and a `run(args) -> int`; this module wires them
together, sets up logging, and turns the errors a user can fix into one line on stderr and a non-zero exit (the
codes are in `EXIT_CODES_HELP`). Arguments are parsed and checked before torch or a model is loaded, so `--help`,
`info` and a mistyped flag answer at once.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence

from tempscale_rag.cli import evaluation, indexing, migrate
from tempscale_rag.cli.options import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    add_argument,
    flag_for_setting,
    quiet_model_loading,
)
from tempscale_rag.index.settings import SettingError

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "build_parser", "entrypoint", "main"]


def _add_output_flags(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # On a subcommand the defaults are SUPPRESS, so `-q` there is added to, never overwritten by, the top level's.
    default_count: object = 0 if top_level else argparse.SUPPRESS
    default_flag: object = False if top_level else argparse.SUPPRESS
    add_argument(
        parser, "-v", "--verbose", action="count", default=default_count, help="More logging (-v info, -vv debug)."
    )
    add_argument(
        parser, "-q", "--quiet", action="store_true", default=default_flag, help="No progress bars or info messages."
    )


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions to the terminal; keeps multi-line text (the exit-code table) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tempscale-rag",
        description="Long-document embeddings with length-routed attention temperature (TempScale).",
        epilog=EXIT_CODES_HELP,
        formatter_class=_HelpFormatter,
    )
    _add_output_flags(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    indexing.register(subparsers)
    evaluation.register(subparsers)
    migrate.register(subparsers)
    for sub in subparsers.choices.values():
        if not any("--quiet" in action.option_strings for action in sub._actions):
            _add_output_flags(sub, top_level=False)
        if sub.epilog is None:
            sub.epilog = EXIT_CODES_HELP
            sub.formatter_class = _HelpFormatter
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = int(getattr(args, "verbose", 0) or 0)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if getattr(args, "quiet", False):
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Restored on exit, so calling main() in-process (tests, notebooks) leaves the caller's logging as it was.
    names = ("tempscale_rag", "transformers", "sentence_transformers", "httpx")
    loggers = {name: logging.getLogger(name) for name in names}
    saved = {name: logger.level for name, logger in loggers.items()}
    loggers["tempscale_rag"].setLevel(level)
    for name in ("transformers", "sentence_transformers", "httpx"):
        loggers[name].setLevel(max(level, logging.WARNING))
    try:
        if getattr(args, "loads_model", True):
            # transformers draws a "Loading weights" bar on every model load; ours are the bars that matter.
            # Commands that check their arguments first (`loads_model=False`) do this right before loading.
            quiet_model_loading()
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that went away is reported here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print("tempscale-rag: interrupted; committed work is kept, re-run the command to finish", file=sys.stderr)
        return EXIT_INTERRUPTED
    except sqlite3.DatabaseError as exc:
        # Stores turn damage into IndexCorruptError; this catches any that reach the CLI another way.
        if verbose >= 2:
            raise
        folder = getattr(args, "out", None)
        where = f" in the index at {folder}" if folder else ""
        print(
            f"tempscale-rag: error: a database{where} is damaged ({_one_line(exc)}); run `tempscale-rag repair"
            f"{' --out ' + str(folder) if folder else ''}` to salvage it, then re-run `tempscale-rag index`",
            file=sys.stderr,
        )
        return EXIT_ERROR
    except SettingError as exc:
        # The library names settings; the user typed flags.
        if verbose >= 2:
            raise
        print(f"tempscale-rag: error: {' '.join(exc.worded(flag_for_setting).split())}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if verbose >= 2:
            raise
        print(f"tempscale-rag: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for name, logger in loggers.items():
            logger.setLevel(saved[name])


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush cannot fail again.

    The pattern from the Python docs' note on SIGPIPE (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # stdout is not a real file (tests capture it): nothing left to flush


def _one_line(exc: BaseException) -> str:
    """The error as one line; pydantic's multi-line validation report becomes `field: message; ...`."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        return "invalid configuration: " + "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'value'}: {e['msg']}" for e in errors()
        )
    return " ".join(str(exc).split())


def entrypoint() -> None:
    """Console-script wrapper that exits with `main`'s code."""
    code = main()
    # Interpreter teardown (a last garbage collection over every object torch and transformers made, then freeing
    # them one by one) took 3-5 s on two cores after every command, Ctrl-C included. Exit handlers still run (Ray's
    # shutdown among them) and output is flushed; then the process ends and its memory goes back to the system.
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
