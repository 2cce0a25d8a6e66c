"""Command-line flags shared by every subcommand, generated from `TempScaleConfig` so help and manifest agree.

Every flag can also be set through an environment variable `TEMPSCALE_<FLAG>` (dashes become underscores), as
text-embeddings-inference and infinity do; a flag on the command line wins over the variable.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from tempscale_rag.config import TempScaleConfig

ENV_PREFIX = "TEMPSCALE_"

RUNTIME_FIELDS = ("device", "dtype", "max_batch_tokens", "tokenize_workers")
"""Config fields that change where and how fast vectors are made, never the vectors themselves."""

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


def env_name(dest: str) -> str:
    """The environment variable that mirrors a flag: `max_seq_length` -> `TEMPSCALE_MAX_SEQ_LENGTH`."""
    return ENV_PREFIX + dest.upper()


def add_argument(parser: argparse.ArgumentParser | Any, *flags: str, **kwargs: Any) -> argparse.Action:
    """`parser.add_argument` whose default comes from the flag's `TEMPSCALE_*` variable when that is set."""
    action = parser.add_argument(*flags, **kwargs)
    convert: Any = action.type or str
    variable = env_name(action.dest)
    if action.option_strings and variable in os.environ:
        raw = os.environ[variable]
        if isinstance(action, argparse._StoreTrueAction):
            action.default = raw.strip().lower() in {"1", "true", "yes", "on"}
        elif action.nargs in ("*", "+"):
            action.default = [convert(v) for v in raw.split()]
        else:
            try:
                action.default = convert(raw)
            except ValueError:
                raise SystemExit(
                    f"tempscale-rag: error: {variable}={raw!r} is not a valid value for {flags[0]}"
                ) from None
    action.help = f"{action.help or ''} [env: {variable}]".strip()
    return action


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Add the embedding configuration flags (model, temperatures, window, device, batching) to a subcommand."""
    group = parser.add_argument_group("embedding configuration (TempScaleConfig)")
    fields = TempScaleConfig.model_fields
    for name, kind in _CONFIG_FLAGS.items():
        add_argument(
            group,
            "--" + name.replace("_", "-"),
            dest=name,
            type=kind,
            default=None,
            metavar=name.split("_")[-1].upper(),
            help=fields[name].description,
        )
    add_argument(
        group,
        "--calibration",
        dest="calibration",
        default=None,
        metavar="FILE",
        help="Calibration file from `tempscale-rag calibrate`: use its bucket temperatures.",
    )


def config_flags_given(args: argparse.Namespace) -> bool:
    """Whether any flag that changes the vectors was given (device, dtype, batching and tokenizing do not)."""
    given = any(getattr(args, n, None) is not None for n in _CONFIG_FLAGS if n not in RUNTIME_FIELDS)
    return given or bool(getattr(args, "calibration", None))


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
