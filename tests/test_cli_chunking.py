"""`tempscale-rag index --chunk-tokens` (several chunk sizes, each its own bucket) and `search --documents`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tempscale_rag.cli import main
from tempscale_rag.config import DEFAULT_QUERY_TEMPERATURE
from tempscale_rag.stores import manifest_of, open_store

from .conftest import run_cli
from .conftest import write_docs as write_shared_docs

TOPICS = {
    "chain.txt": "Clean the bicycle chain with a degreaser, dry it, then apply one drop of lubricant per roller. "
    "A dry chain squeaks and wears the cassette. ",
    "soup.md": "# Red lentil soup\n\nFry onion and cumin, add red lentils and stock, simmer twenty minutes. "
    "Blend half of it for a creamy texture. ",
    "contract.rst": "Termination\n===========\n\nEither party may terminate this agreement with ninety days notice. "
    "Notice must be given in writing to the registered address. ",
}


def write_docs(folder: Path, repeat: int = 6) -> Path:
    return write_shared_docs(folder, repeat, TOPICS)


@pytest.fixture(scope="module")
def multi_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    docs = write_docs(root / "docs")
    index = root / "index"
    assert main(["-q", "index", str(docs), "--out", str(index), "--chunk-tokens", "32:1.0,64:0.9"]) == 0
    return index


def test_every_document_is_chunked_at_every_size_and_each_size_gets_its_temperature(multi_index: Path) -> None:
    with open_store(multi_index, read_only=True) as store:
        manifest = manifest_of(store)
        assert manifest.chunking is not None
        assert manifest.chunking.sizes == (32, 64) and manifest.chunking.taus == (1.0, 0.9)
        assert [b.tau for b in manifest.config.buckets] == [1.0, 0.9]
        hits = store.search(store_query_vector(store), k=store.count())
    sizes_by_source: dict[str, set[int]] = {}
    for hit in hits:
        size = hit.metadata["chunk_tokens"]
        assert isinstance(size, int)
        sizes_by_source.setdefault(Path(hit.source).name, set()).add(size)
        if hit.token_length > 32 + 2 + 1:  # longer than any 32-token chunk: a 64-token chunk, in the 0.9 bucket
            assert size == 64 and hit.bucket == manifest.config.buckets[1].label()
    assert sizes_by_source == {name: {32, 64} for name in TOPICS}


def store_query_vector(store: object) -> object:
    import numpy as np

    vector = np.ones(384, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def test_info_and_search_show_the_chunking(multi_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "info", "--out", str(multi_index))
    assert code == 0 and "sizes 32:1,64:0.9" in out and "document score softmax" in out
    info = json.loads(run_cli(capsys, "info", "--out", str(multi_index), "--json")[1])
    assert info["chunking"]["sizes"] == [32, 64] and info["format_version"] == 2
    code, out, _ = run_cli(capsys, "search", "ninety days notice", "--out", str(multi_index), "--json", "-k", "2")
    hits = json.loads(out)
    assert code == 0 and hits[0]["source"].endswith("contract.rst") and hits[0]["chunk_tokens"] in (32, 64)
    code, out, _ = run_cli(capsys, "search", "ninety days notice", "--out", str(multi_index), "-k", "2")
    assert code == 0 and "-token size]" in out.splitlines()[0]  # chunks of two sizes can start alike: name the size


def test_explicit_temperatures_win_and_may_not_be_given_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    code, _, err = run_cli(
        capsys,
        "index",
        str(docs),
        "--out",
        str(tmp_path / "a"),
        "--chunk-tokens",
        "32:1.0,64:0.9",
        "--temperature",
        "0.8",
    )
    assert code == 1 and "temperatures given twice" in err and not (tmp_path / "a").exists()
    code, _, err = run_cli(
        capsys, "index", str(docs), "--out", str(tmp_path / "b"), "--chunk-tokens", "32,64", "--temperature", "0.8"
    )
    assert code == 0, err
    info = json.loads(run_cli(capsys, "info", "--out", str(tmp_path / "b"), "--json")[1])
    assert info["config"]["temperature"] == 0.8 and info["chunking"]["sizes"] == [32, 64]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("64,32", "increasing"), ("32:1.0,64", "for every chunk size or for none"), ("32:0", "> 0"), ("4096", "window")],
)
def test_bad_chunk_specs_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    docs = write_docs(tmp_path / "docs", repeat=1)
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "i"), "--chunk-tokens", spec)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "i").exists() or not any((tmp_path / "i").glob("*.sqlite"))


def test_legacy_index_without_chunking_still_opens_and_refuses_new_chunk_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_docs(tmp_path / "docs", repeat=2)
    index = tmp_path / "index"
    assert run_cli(capsys, "index", str(docs), "--out", str(index))[0] == 0
    manifest = json.loads((index / "manifest.json").read_text())
    del manifest["chunking"]  # what tempscale-rag wrote before chunk settings were recorded
    manifest["format_version"] = 1
    (index / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "info", "--out", str(index))
    assert code == 0 and "legacy: one chunk size filling the model window" in out
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(index), "--chunk-tokens", "64")
    assert code == 1 and "before chunk settings were recorded" in err and "rebuild" in err
    (docs / "new.md").write_text("Sourdough needs a lively starter and a long, cool rise.", encoding="utf-8")
    code, out, err = run_cli(capsys, "index", str(docs), "--out", str(index), "--json")
    assert code == 0 and json.loads(out)["files_indexed"] == 1, err
    with open_store(index, read_only=True) as store:
        assert manifest_of(store).chunking is None, "a legacy index stays legacy: never mixed"


def test_search_documents_one_entry_per_file(multi_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        "search",
        "how do I lubricate a bicycle chain?",
        "--out",
        str(multi_index),
        "--documents",
        "--json",
        "-k",
        "3",
    )
    assert code == 0, err
    documents = json.loads(out)
    assert Path(documents[0]["source"]).name == "chain.txt"
    assert len({d["source"] for d in documents}) == len(documents) == 3, "one entry per file"
    assert [d["score"] for d in documents] == sorted((d["score"] for d in documents), reverse=True)
    for doc in documents:
        assert set(doc) == {"source", "score", "chunks"} and 1 <= len(doc["chunks"]) <= 3
        assert all(set(c) == {"text", "position", "score"} for c in doc["chunks"])
    assert "lubricant" in documents[0]["chunks"][0]["text"]

    code, out, _ = run_cli(
        capsys, "search", "lentil soup", "--out", str(multi_index), "--documents", "-k", "1", "--doc-score", "mean"
    )
    assert code == 0 and "soup.md" in out and "lentil" in out.lower()


def test_doc_score_is_validated_before_loading_anything(multi_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "search", "soup", "--out", str(multi_index), "--documents", "--doc-score", "best")
    assert code == 1 and "unknown document score 'best'" in err
    code, _, err = run_cli(capsys, "search", "soup", "--out", str(multi_index), "--doc-score", "max")
    assert code == 1 and "--documents" in err


def test_index_with_a_per_size_calibration_file_uses_its_sizes_and_taus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tempscale_rag.config import ChunkingConfig

    chunking = ChunkingConfig(sizes=(24, 48), temperatures=(1.0, 0.7))
    calibration = tmp_path / "cal.json"
    buckets = [b.model_dump(mode="json") for b in chunking.buckets(2)]
    calibration.write_text(json.dumps({"buckets": buckets, "chunking": chunking.to_json_dict()}), encoding="utf-8")
    docs = write_docs(tmp_path / "docs", repeat=2)
    code, _, err = run_cli(capsys, "index", str(docs), "--out", str(tmp_path / "i"), "--calibration", str(calibration))
    assert code == 0, err
    info = json.loads(run_cli(capsys, "info", "--out", str(tmp_path / "i"), "--json")[1])
    assert info["chunking"]["sizes"] == [24, 48] and info["chunking"]["temperatures"] == [1.0, 0.7]
    assert [b["tau"] for b in info["config"]["buckets"]] == [1.0, 0.7]
    assert info["config"]["query_temperature"] == DEFAULT_QUERY_TEMPERATURE  # queries: one tau, not a chunk bucket's


def test_queries_get_the_default_query_tau_or_the_one_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = write_docs(tmp_path / "docs", repeat=1)
    for out, extra, expected in (("a", [], DEFAULT_QUERY_TEMPERATURE), ("b", ["--query-temperature", "1"], 1.0)):
        code, _, err = run_cli(
            capsys, "index", str(docs), "--out", str(tmp_path / out), "--chunk-tokens", "32,64", *extra
        )
        assert code == 0, err
        info = json.loads(run_cli(capsys, "info", "--out", str(tmp_path / out), "--json")[1])
        assert info["config"]["query_temperature"] == expected
    _, text, _ = run_cli(capsys, "info", "--out", str(tmp_path / "a"))
    assert f"queries    tau {DEFAULT_QUERY_TEMPERATURE:g}" in text


def test_a_short_file_is_shown_once_not_once_per_chunk_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Shorter than every size: the same text is a chunk at 32 and at 64 tokens (two vectors, one text to show).
    docs = write_docs(tmp_path / "docs", repeat=1)
    index = tmp_path / "index"
    assert main(["-q", "index", str(docs), "--out", str(index), "--chunk-tokens", "32:1.0,64:0.9"]) == 0
    with open_store(index, read_only=True) as store:
        texts = [(h.source, h.text) for h in store.search(store_query_vector(store), k=store.count())]
    assert len(texts) > len(set(texts)), "the store holds the same text at both sizes"
    capsys.readouterr()  # the index summary
    code, out, err = run_cli(capsys, "search", "bicycle chain lubricant", "--out", str(index), "--json", "-k", "4")
    assert code == 0, err
    hits = [(h["source"], h["text"]) for h in json.loads(out)]
    assert len(hits) == len(set(hits)) == 4, hits
    code, out, err = run_cli(capsys, "search", "chain", "--out", str(index), "--documents", "--json", "-k", "3")
    assert code == 0, err
    for doc in json.loads(out):
        texts = [c["text"] for c in doc["chunks"]]
        assert len(texts) == len(set(texts)), texts
