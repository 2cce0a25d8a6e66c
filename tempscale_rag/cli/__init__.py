"""The `tempscale-rag` command: index, search, info, eval, collapse, calibrate.

Each subcommand lives in its own module with `register(subparsers)` and a `run(args) -> int`; this module wires them
together, sets up logging, and turns the errors a user can fix into one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tempscale_rag.cli import evaluation, indexing
from tempscale_rag.cli.options import add_argument

EXIT_USAGE = 2
EXIT_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="tempscale-rag",
        description="Long-document embeddings with length-routed attention temperature (TempScale).",
    )
    add_argument(parser, "-v", "--verbose", action="count", default=0, help="More logging (-v info, -vv debug).")
    add_argument(parser, "-q", "--quiet", action="store_true", help="No progress bars or info messages.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    indexing.register(subparsers)
    evaluation.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    if args.quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Restored on exit, so calling main() in-process (tests, notebooks) leaves the caller's logging as it was.
    names = ("tempscale_rag", "transformers", "sentence_transformers", "httpx")
    loggers = {name: logging.getLogger(name) for name in names}
    saved = {name: logger.level for name, logger in loggers.items()}
    loggers["tempscale_rag"].setLevel(level)
    for name in ("transformers", "sentence_transformers", "httpx"):
        loggers[name].setLevel(max(level, logging.WARNING))
    # transformers draws a "Loading weights" bar on every model load; ours are the progress bars that matter.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("tempscale-rag: interrupted; committed work is kept, re-run the command to finish", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.verbose >= 2:
            raise
        print(f"tempscale-rag: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for name, logger in loggers.items():
            logger.setLevel(saved[name])


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
    sys.exit(main())
