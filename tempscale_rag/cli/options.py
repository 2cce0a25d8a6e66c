"""Command-line flags shared by every subcommand, generated from `TempScaleConfig` so help and manifest agree.

Every flag and positional argument can also be set through an environment variable `TEMPSCALE_<DEST>` (dashes
become underscores), as text-embeddings-inference and infinity do; the command line wins over the variable. A
variable for a list (`TEMPSCALE_PATHS`) is split like a shell would (`shlex`), so quote paths with spaces.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from tempscale_rag.config import TempScaleConfig, settings_that_shape

ENV_PREFIX = "TEMPSCALE_"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success (unsupported file types are skipped and listed, not failures)
  {EXIT_ERROR}    error: bad input path, invalid setting, damaged or mismatched index (one line on stderr)
  {EXIT_USAGE}    usage error: unknown flag or missing argument
  {EXIT_PARTIAL}    partial: the index was updated, but some files could not be read or indexed (listed)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); committed work is kept, re-run to finish
A closed output pipe (`tempscale-rag search ... | head -1`) ends quietly with {EXIT_OK}."""

RUNTIME_FIELDS = tuple(n for n in settings_that_shape(TempScaleConfig, "run") if n != "calibration_file")
"""Config flags that change where and how fast vectors are made, never the vectors (the fields declared `run`)."""

# Config fields exposed as flags, with the argparse type used to read them from text.
_CONFIG_FLAGS: dict[str, Any] = {
    "model": str,
    "temperature": float,
    "buckets": str,
    "schedule": str,
    "query_temperature": float,
    "long_text": str,
    "chunk_overlap": int,
    "max_seq_length": int,
    "device": str,
    "dtype": str,
    "max_batch_tokens": int,
    "tokenize_workers": int,
}


def quiet_model_loading() -> None:
    """Hide transformers' "Loading weights" bar; call right before loading a model (it imports transformers)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def env_name(dest: str) -> str:
    """The environment variable that mirrors a flag: `max_seq_length` -> `TEMPSCALE_MAX_SEQ_LENGTH`."""
    return ENV_PREFIX + dest.upper()


def add_argument(
    parser: argparse.ArgumentParser | Any, *flags: str, shown_default: Any = None, **kwargs: Any
) -> argparse.Action:
    """`parser.add_argument` whose default comes from its `TEMPSCALE_*` variable when that is set.

    Args:
        parser: The parser or argument group.
        *flags: The option strings, or the name of a positional argument.
        shown_default: The default written in the help when the argparse default is None (e.g. a config field's).
        **kwargs: As for `add_argument`.

    Returns:
        The action.
    """
    action = parser.add_argument(*flags, **kwargs)
    variable = env_name(action.dest)
    if variable in os.environ and action.default is not argparse.SUPPRESS:
        _default_from_environment(action, variable, os.environ[variable], flags[0])
    default = action.default if shown_default is None else shown_default
    help_text = action.help or ""
    if (
        default not in (None, False, argparse.SUPPRESS, [])
        and "(default" not in help_text.lower()
        and variable not in os.environ
    ):
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
        help_text = f"{help_text} (default: {shown})"
    action.help = f"{help_text} [env: {variable}]".strip().replace("%", "%%")
    return action


def _default_from_environment(action: argparse.Action, variable: str, raw: str, flag: str) -> None:
    convert: Any = action.type or (int if isinstance(action, argparse._CountAction) else str)
    try:
        if isinstance(action, argparse._StoreTrueAction):
            action.default = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif isinstance(action, argparse._CountAction):
            action.default = max(0, int(raw))
        elif action.nargs in ("*", "+"):
            action.default = [convert(v) for v in shlex.split(raw)]
            if not action.option_strings:
                action.nargs = "*"  # a positional list may now be left out: the variable supplies it
        else:
            action.default = convert(raw)
            if not action.option_strings and action.nargs is None:
                action.nargs = "?"
    except ValueError:
        raise SystemExit(f"tempscale-rag: error: {variable}={raw!r} is not a valid value for {flag}") from None
    if not action.option_strings:
        action.required = False


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add the embedding configuration flags (model, temperatures, window, device, batching) to a subcommand."""
    group = parser.add_argument_group("embedding configuration (TempScaleConfig)")
    fields = TempScaleConfig.model_fields
    for name, kind in _CONFIG_FLAGS.items():
        field_default = fields[name].default
        add_argument(
            group,
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=fields[name].description,
            shown_default=None if name == "buckets" else field_default,
        )
    add_argument(
        group,
        "--calibration",
        dest="calibration",
        default=None,
        metavar="FILE",
        help="Calibration file from `tempscale-rag calibrate`: use its bucket temperatures.",
    )


TEMPERATURE_FIELDS = ("temperature", "buckets", "schedule")
"""Config fields that set document temperatures explicitly (they override per-chunk-size temperatures)."""


def given_config_fields(args: argparse.Namespace) -> list[str]:
    """The config fields that shape documents or queries (not `run` ones) given as flags or environment variables."""
    shaping = settings_that_shape(TempScaleConfig, "documents", "queries")
    return [n for n in _CONFIG_FLAGS if n in shaping and getattr(args, n, None) is not None]


def temperature_flags_given(args: argparse.Namespace) -> bool:
    """Whether --temperature, --buckets, --schedule or --calibration was given."""
    return any(getattr(args, n, None) is not None for n in TEMPERATURE_FIELDS) or bool(
        getattr(args, "calibration", None)
    )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TempScaleConfig:
    """Build the `TempScaleConfig` a subcommand asked for (flags and environment), validated.

    Raises:
        ValueError: If a value is invalid (the message says which and why).
    """
    fields = {name: getattr(args, name) for name in _CONFIG_FLAGS if getattr(args, name, None) is not None}
    fields.update(overrides)
    calibration = getattr(args, "calibration", None)
    if calibration:
        return TempScaleConfig.with_calibration(calibration, **fields)
    return TempScaleConfig(**fields)


_SETTING_FLAGS = {
    "folder": "--out",
    "chunking.sizes": "--chunk-tokens",
    "chunking.temperatures": "--chunk-tokens",
    "chunking.overlap_tokens": "--chunk-overlap-tokens",
    "chunking.doc_score": "--doc-score",
}


def flag_for_setting(setting: str) -> str:
    """The command-line flag of a setting named by a library error: `max_seq_length` -> `--max-seq-length`."""
    return _SETTING_FLAGS.get(setting) or "--" + setting.removeprefix("chunking.").replace("_", "-")
