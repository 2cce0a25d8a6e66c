"""What the LlamaIndex and LangChain adapters share: their fields <-> `TempScaleConfig`, and engine sharing.

Both adapters expose the engine configuration as flat, serialisable fields (`model_name`, `query_instruction`,
`text_instruction` in their ecosystems' spelling; the rest as in `TempScaleConfig`). Keeping the mapping here means
the two adapters stay thin and cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from tempscale_rag.config import TempScaleConfig
from tempscale_rag.encoder import TempScaleEncoder
from tempscale_rag.models import canonical_model_name

# Adapter field name -> TempScaleConfig field name, where they differ.
_RENAMED = {"model_name": "model", "query_instruction": "query_prompt", "text_instruction": "document_prompt"}


def config_from_fields(fields: dict[str, Any], *, what: str) -> TempScaleConfig:
    """Build the engine config from an adapter's fields (None means "the engine's default").

    A `calibration_file` supplies the buckets when `buckets` is None; with `buckets` given it is only recorded.

    Args:
        fields: The adapter's field values.
        what: The adapter's class name, for error messages.

    Raises:
        ValueError: For an invalid configuration, naming the adapter.
    """
    options = {_RENAMED.get(k, k): v for k, v in fields.items() if v is not None and k != "calibration_file"}
    calibration = fields.get("calibration_file")
    try:
        if calibration is not None and fields.get("buckets") is None:
            return TempScaleConfig.with_calibration(calibration, **options)
        return TempScaleConfig(**options, calibration_file=calibration)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"invalid {what} configuration: {exc}") from None


def fields_from_engine(encoder: TempScaleEncoder) -> dict[str, Any]:
    """An adapter's fields for an engine's configuration (the inverse of `config_from_fields`)."""
    config = encoder.config.model_dump(mode="json", exclude={"model"})
    return {
        "model_name": encoder.model_name,
        "query_instruction": config.pop("query_prompt") or None,
        "text_instruction": config.pop("document_prompt") or None,
        **config,
    }


def engine_for(config: TempScaleConfig, shared: TempScaleEncoder | None) -> TempScaleEncoder:
    """The engine for `config`: `shared` itself if it has that configuration, else one sharing its loaded model."""
    if shared is None:
        return TempScaleEncoder(config=config)
    if canonical_model_name(config.model) == shared.model_name:
        # Same model under another spelling (bundled name vs. its folder): keep the engine's own spelling.
        config = config.model_copy(update={"model": shared.config.model})
    if config == shared.config:
        return shared
    return shared.with_config(**config.model_dump())


ENGINE_FIELDS: tuple[str, ...] = (
    "model_name",
    "temperature",
    "buckets",
    "calibration_file",
    "schedule",
    "schedule_n0",
    "query_temperature",
    "long_text",
    "chunk_overlap",
    "max_seq_length",
    "device",
    "dtype",
    "max_batch_tokens",
    "normalize",
    "query_instruction",
    "text_instruction",
)
"""The adapter fields that configure the engine (both adapters declare exactly these)."""
