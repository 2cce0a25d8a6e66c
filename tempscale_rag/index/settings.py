"""Settings asked of an existing index, compared with what it records; errors that name settings, not flags.

An index is added to and searched with its own recorded settings. A caller that states a setting (the CLI passes
the flags a user gave) has it compared here with the index's value, by what the setting shapes
(`tempscale_rag.config.settings_that_shape`): `run` settings (device, dtype, batching) apply to this session,
`documents` and `queries` settings must equal the index's. Errors carry the setting names, so the CLI words them
with its flags (`SettingError.worded`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tempscale_rag.config import Bucket, ChunkingConfig, TempScaleConfig, settings_that_shape
from tempscale_rag.stores.errors import IndexMismatchError
from tempscale_rag.stores.manifest import IndexManifest, same_model

Namer = Callable[[str], str]
"""Turns a setting name (`temperature`, `chunking.sizes`, or `folder`: the index folder) into the word a message uses
for it."""


def _plain(name: str) -> str:
    return name


class SettingError(ValueError):
    """A problem with settings a caller gave; `worded(namer)` renders it with other names for the settings."""

    def __init__(self, render: Callable[[Namer], str]) -> None:
        self._render = render
        super().__init__(render(_plain))

    def worded(self, namer: Namer) -> str:
        """The message with every setting name passed through `namer` (e.g. `temperature` -> `--temperature`)."""
        return self._render(namer)


class SettingMismatchError(SettingError, IndexMismatchError):
    """Settings given for an existing index differ from the ones it records."""


@dataclass(frozen=True)
class SettingDifference:
    """One setting whose requested value differs from the index's.

    Attributes:
        setting: The setting's name (a `TempScaleConfig` field, or `chunking.<ChunkingConfig field>`).
        index: The index's value, as shown in messages.
        requested: The requested value, as shown in messages.
    """

    setting: str
    index: Any
    requested: Any

    def describe(self, namer: Namer = _plain) -> str:
        """`NAME: the index has X, you asked for Y`."""
        return f"{namer(self.setting)}: the index has {self.index!r}, you asked for {self.requested!r}"


def _shown(value: Any) -> Any:
    if isinstance(value, tuple) and value and all(isinstance(b, Bucket) for b in value):
        return ",".join(f"{b.label()}:{b.tau:g}" for b in value)
    return value


def config_differences(stored: TempScaleConfig, requested: Mapping[str, Any]) -> list[SettingDifference]:
    """The `documents` and `queries` settings of `requested` whose values differ from `stored`'s.

    `run` settings and `model` (an identity, see `same_model`) are not compared.

    Raises:
        ValueError: If a name is not a `TempScaleConfig` setting or a value is invalid.
    """
    unknown = sorted(set(requested) - set(TempScaleConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}: settings are the fields of TempScaleConfig")
    shaping = settings_that_shape(TempScaleConfig, "documents", "queries")
    given = {name: value for name, value in requested.items() if name in shaping and name != "model"}
    if not given:
        return []
    # Validated the way the index's config is (a bucket spec string becomes buckets).
    wanted = TempScaleConfig(**{**stored.model_dump(), **given})
    return [
        SettingDifference(name, _shown(getattr(stored, name)), _shown(getattr(wanted, name)))
        for name in given
        if getattr(stored, name) != getattr(wanted, name)
    ]


def chunking_differences(stored: ChunkingConfig | None, requested: Mapping[str, Any]) -> list[SettingDifference]:
    """The chunk settings of `requested` (`ChunkingConfig` field names) that differ from the index's chunking.

    `temperatures` is compared only when given (sizes alone keep the index's temperatures). An index made before
    chunking was recorded (`stored` None) differs from any chunk setting given.

    Raises:
        ValueError: If a name is not a `ChunkingConfig` field or a value is invalid.
    """
    unknown = sorted(set(requested) - set(ChunkingConfig.model_fields))
    if unknown:
        raise ValueError(f"unknown chunk setting {unknown[0]!r}: chunk settings are the fields of ChunkingConfig")
    given = {name: value for name, value in requested.items() if value is not None}
    if not given:
        return []
    if stored is None:
        legacy = "none recorded (made before chunk settings were recorded: one chunk size filling the model window)"
        return [SettingDifference(f"chunking.{name}", legacy, value) for name, value in given.items()]
    wanted = ChunkingConfig(**{**stored.model_dump(), **given})
    out = []
    for name in given:
        have, want = getattr(stored, name), getattr(wanted, name)
        if name == "temperatures":
            have, want = stored.taus, wanted.taus
        if have != want:
            out.append(SettingDifference(f"chunking.{name}", have, want))
    return out


def refuse_differences(folder: Path, differences: list[SettingDifference]) -> None:
    """Raise `SettingMismatchError` listing `differences` (nothing when empty)."""
    if not differences:
        return
    found = list(differences)

    def render(namer: Namer) -> str:
        listed = "; ".join(d.describe(namer) for d in found)
        return (
            f"the index at {folder} was built with other settings ({listed}): open it with its own settings "
            f"(they are in its manifest.json), or rebuild with the new ones: delete {folder} (or pick another "
            f"{namer('folder')}) and build the index again"
        )

    raise SettingMismatchError(render)


def check_model_setting(manifest: IndexManifest, model: str | None, folder: Path) -> str:
    """The model to load for an existing index: `model` when it is the index's model, else the recorded one.

    Raises:
        SettingMismatchError: If `model` is another model than the one that built the index.
        SettingError: If the index's model is a local folder that no longer exists and `model` is not given.
    """
    if model is not None:
        if not same_model(manifest, model):
            given = model
            raise SettingMismatchError(
                lambda namer: (
                    f"the index at {folder} was built with model {manifest.model!r}; {namer('model')} {given} is "
                    "another model (a moved model folder is accepted only when its files are the same): leave it "
                    "out, or build a new index with the new model in another folder"
                )
            )
        return model
    recorded = manifest.config.model
    if Path(recorded).is_absolute() and not Path(recorded).exists():
        raise SettingError(
            lambda namer: (
                f"the index at {folder} was built with the model folder {recorded}, which no longer exists; if you "
                f"moved it, give its new location as {namer('model')} (checked to be the same model)"
            )
        )
    return recorded


def check_run_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The given `run` settings (those left None dropped).

    Raises:
        SettingError: If a setting shapes documents or queries: an index is used with its own.
    """
    run = set(settings_that_shape(TempScaleConfig, "run"))
    shaping = sorted(name for name, value in settings.items() if name not in run and value is not None)
    if shaping:
        name = shaping[0]
        raise SettingError(
            lambda namer: (
                f"{namer(name)} is not a run setting: an index is used with the settings it was built with "
                f"(the run settings are {', '.join(namer(n) for n in sorted(run))})"
            )
        )
    return {name: value for name, value in settings.items() if value is not None}
