"""What the LlamaIndex and LangChain adapters share: their fields <-> `TempScaleConfig`, and engine sharing.

Both adapters expose the engine configuration as flat, serialisable fields (`model_name`, `query_instruction`,
`text_instruction` in their ecosystems' spelling; the rest as in `TempScaleConfig`). Keeping the mapping here means
the two adapters stay thin and cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from tempscale_rag.config import BUNDLED_MODEL, Bucket, TempScaleConfig
from tempscale_rag.encoder import EncodeReport, TempScaleEncoder
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
    "tokenize_workers",
    "normalize",
    "query_instruction",
    "text_instruction",
)
"""The adapter fields that configure the engine (both adapters declare exactly these)."""


class EngineFields(BaseModel):
    """The engine configuration as flat, serialisable adapter fields (`None` means "the engine's default").

    Both `TempScaleEmbedding` (LlamaIndex) and `TempScaleEmbeddings` (LangChain) inherit these, so their settings
    and their documentation cannot drift apart. They are frozen: the engine is built from them once.
    """

    model_config = ConfigDict(protected_namespaces=())

    _encoder: TempScaleEncoder = PrivateAttr()
    _last_report: EncodeReport = PrivateAttr()

    model_name: str = Field(
        default=BUNDLED_MODEL,
        frozen=True,
        description="sentence-transformers model name or path; the default is the bundled all-MiniLM-L6-v2.",
    )
    temperature: float | None = Field(
        default=None, frozen=True, description="One attention temperature for every input (overrides buckets)."
    )
    buckets: str | list[dict[str, Any]] | None = Field(
        default=None,
        frozen=True,
        description="Token-length buckets with a tau each, as '0-128:1.0,128-256:0.9,256-:0.8' or a list of "
        "{'min_tokens', 'max_tokens', 'tau'}; None uses the engine's default buckets or the calibration file.",
    )
    calibration_file: str | None = Field(
        default=None,
        frozen=True,
        description="Calibration JSON from `tempscale-rag calibrate`; its buckets are used when `buckets` is None "
        "(with `buckets` given it is only recorded as their origin).",
    )
    schedule: Literal["longembed"] | None = Field(
        default=None, frozen=True, description="Continuous temperature schedule instead of buckets."
    )
    schedule_n0: int | None = Field(
        default=None, frozen=True, description="n0 of the 'longembed' schedule in tokens; None: the engine default."
    )
    query_temperature: float | None = Field(
        default=None, frozen=True, description="Temperature for every query whatever its length; None routes by length."
    )
    long_text: Literal["truncate", "chunk_mean"] | None = Field(
        default=None,
        frozen=True,
        description="Texts longer than the window: 'truncate' (engine default) or 'chunk_mean' (average of windows).",
    )
    chunk_overlap: int | None = Field(
        default=None, frozen=True, description="Token overlap between windows under 'chunk_mean'; None: the default."
    )
    max_seq_length: int | None = Field(
        default=None, frozen=True, description="Model window in tokens; None uses the model's full position window."
    )
    device: str | None = Field(
        default=None, frozen=True, description="torch device such as 'cpu' or 'cuda:0'; None picks CUDA if present."
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] | None = Field(
        default=None, frozen=True, description="Compute dtype; None is 'auto' (half precision on GPU, float32 on CPU)."
    )
    max_batch_tokens: int | None = Field(
        default=None, frozen=True, description="Padded tokens per forward pass; None picks a budget for the device."
    )
    tokenize_workers: int | None = Field(
        default=None,
        frozen=True,
        description="Worker processes that tokenise ahead of a GPU; None: one per CPU core; 0: none.",
    )
    normalize: bool = Field(default=True, frozen=True, description="L2-normalise the vectors.")
    query_instruction: str | None = Field(
        default=None, frozen=True, description="Text prepended to every query (the engine's `query_prompt`)."
    )
    text_instruction: str | None = Field(
        default=None, frozen=True, description="Text prepended to every document (the engine's `document_prompt`)."
    )

    @field_validator("buckets", mode="before")
    @classmethod
    def _buckets_as_plain_data(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [b.model_dump() if isinstance(b, Bucket) else b for b in value]
        return value

    def engine_config(self) -> TempScaleConfig:
        """The `TempScaleConfig` these fields describe (calibration file resolved).

        Raises:
            ValueError: For an invalid configuration, naming the adapter class.
        """
        return config_from_fields({name: getattr(self, name) for name in ENGINE_FIELDS}, what=type(self).__name__)

    def _attach_engine(self, shared: TempScaleEncoder | None) -> None:
        """Build (or share) the engine these fields describe; call once from the adapter's `__init__`."""
        self._encoder = engine_for(self.engine_config(), shared)
        self._last_report = EncodeReport(window=self._encoder.window, long_text=self._encoder.config.long_text)

    @classmethod
    def from_encoder(cls, encoder: TempScaleEncoder, **kwargs: Any) -> Self:
        """Wrap an already built engine, sharing its loaded model.

        The engine's configuration becomes this object's fields, so `model_dump()` records exactly what it does.

        Args:
            encoder: The engine to use.
            **kwargs: Other fields. Engine fields given here (e.g. `temperature=0.8`) make a variant of the engine
                that still shares its loaded model.

        Returns:
            The adapter.
        """
        fields = fields_from_engine(encoder)
        # A new bucket source replaces the engine's: new buckets are not from its calibration file, and a new
        # calibration file must not be overridden by the engine's explicit buckets.
        if "buckets" in kwargs and "calibration_file" not in kwargs:
            fields["calibration_file"] = None
        if "calibration_file" in kwargs and "buckets" not in kwargs:
            fields["buckets"] = None
        fields.update(kwargs)
        return cls(encoder=encoder, **fields)

    @property
    def encoder(self) -> TempScaleEncoder:
        """The engine that computes the vectors (share it with `from_encoder`)."""
        return self._encoder

    @property
    def config(self) -> TempScaleConfig:
        """The resolved engine configuration (buckets from the calibration file included)."""
        return self._encoder.config

    @property
    def dimension(self) -> int:
        """Length of every vector."""
        return self._encoder.dimension

    @property
    def last_report(self) -> EncodeReport:
        """Routing and truncation report of this object's last call (`.to_dict()` for JSON)."""
        return self._last_report

    def _embed_lists(self, texts: list[str], *, query: bool, show_progress: bool) -> list[list[float]]:
        """The engine's vectors as lists of floats, each batch converted while the GPU runs the next.

        `encode_lists` returns this call's report, so concurrent (async) calls cannot swap reports.
        """
        vectors, self._last_report = self._encoder.encode_lists(texts, query=query, show_progress=show_progress)
        return vectors
