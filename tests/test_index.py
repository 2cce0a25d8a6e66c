"""`Index` on real files, the bundled model, real FAISS and Qdrant local mode: the CLI ranking, lazy loading, checks."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag import Index, TempScaleConfig
from tempscale_rag.config import ChunkingConfig
from tempscale_rag.index import SettingError, SettingMismatchError
from tempscale_rag.stores import IndexMismatchError, IndexNotFoundError, QdrantSettings

from .conftest import run_cli, write_docs

QUESTIONS = ["how do I lubricate a chain?", "ninety days notice", "how long do lentils simmer?"]
CHUNKING = ChunkingConfig.parse("16,48")


def forbid_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any model load fail loudly (the engine loads through `load_sentence_transformer`)."""
    import tempscale_rag.encoder
    import tempscale_rag.models

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(tempscale_rag.models, "load_sentence_transformer", refuse)
    if hasattr(tempscale_rag.encoder, "load_sentence_transformer"):
        monkeypatch.setattr(tempscale_rag.encoder, "load_sentence_transformer", refuse)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index built by `tempscale-rag index` with two chunk sizes (default temperatures and query tau)."""
    from tempscale_rag.cli import main

    root = tmp_path_factory.mktemp("cli-index")
    docs = write_docs(root / "docs", repeat=8)
    assert main(["--quiet", "index", str(docs), "--out", str(root / "index"), "--chunk-tokens", "16,48"]) == 0
    return root / "index"


def test_index_gives_exactly_the_cli_ranking(cli_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's `Index.open(folder).search_documents(question, k=5)` is `search --documents`, score for score."""
    with Index.open(cli_index) as index:
        for question in QUESTIONS:
            code, out, err = run_cli(capsys, "search", question, "--out", str(cli_index), "--documents", "--json")
            assert code == 0, err
            cli = json.loads(out)
            api = index.search_documents(question, k=5)
            assert [(d.source, d.score) for d in api] == [(d["source"], d["score"]) for d in cli]
            assert [[(c.text, c.score) for c in d.chunks] for d in api] == [
                [(c["text"], c["score"]) for c in d["chunks"]] for d in cli
            ]
            code, out, _ = run_cli(capsys, "search", question, "--out", str(cli_index), "--json", "-k", "4")
            chunks = index.search(question, k=4)
            assert [(h.source, h.text, h.score) for h in chunks] == [
                (r["source"], r["text"], r["score"]) for r in json.loads(out)
            ]
        # The query is encoded at the index's recorded query tau (0.8 for a chunked index), not by its length (1.0).
        assert index.config.query_temperature == 0.8
        vector = index.query_vector(QUESTIONS[0])
        plain = TempScaleConfig()  # what a user-built encoder would route a short question to: tau 1
        routed = index.encoder.with_config(**plain.model_dump()).encode([QUESTIONS[0]], query=True)[0]
        assert not np.allclose(vector, routed, atol=1e-4), "the index's query tau differs from length routing"
        by_vector = index.search_documents(vector, k=5)
        # A vector has no terms: it is ranked by the dense channel alone, as the question is with retrieval="dense".
        assert [(d.source, d.score) for d in by_vector] == [
            (d.source, d.score) for d in index.search_documents(QUESTIONS[0], k=5, retrieval="dense")
        ]


def test_opening_and_info_load_no_model(cli_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_model_loading(monkeypatch)
    with Index.open(cli_index) as index:
        info = index.info()
        assert info["files"] == 3 and info["dimension"] == 384 and info["chunking"]["sizes"] == [16, 48]
        hits = index.search_documents(np.ones(384, dtype=np.float32) / np.sqrt(384), k=2)  # a vector: no model
        assert len(hits) == 2
        with pytest.raises(ValueError, match="has 384 values"):
            index.search(np.ones(16, dtype=np.float32))
        with pytest.raises(AssertionError, match="a model was loaded"):
            index.search("a text needs the model")


def test_a_manifest_with_another_dimension_is_refused_before_any_model_load(
    tmp_path: Path, cli_index: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24.5: the refusal comes at once, says what the index records, and never 'you asked for'."""
    import shutil

    index = tmp_path / "index"
    shutil.copytree(cli_index, index)
    manifest = json.loads((index / "manifest.json").read_text(encoding="utf-8"))
    manifest["dimension"] = 385
    (index / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    docs = write_docs(tmp_path / "docs", repeat=2)
    forbid_model_loading(monkeypatch)
    for command in (["index", str(docs)], ["search", "chain"], ["search", "chain", "--documents"]):
        started = time.perf_counter()
        code, _, err = run_cli(capsys, *command, "--out", str(index))
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert "records 385-dimensional vectors in its manifest.json" in err and "makes 384-dimensional" in err, err
        assert "you asked for" not in err and "Rebuild" in err
        assert time.perf_counter() - started < 5
    with pytest.raises(IndexMismatchError, match="records 385-dimensional"):
        Index.open(index)


def test_settings_given_for_an_index_are_checked_by_what_they_shape(cli_index: Path) -> None:
    with pytest.raises(SettingMismatchError) as info:
        Index.open(cli_index, expected_settings={"temperature": 0.5}, expected_chunking={"sizes": (16, 64)})
    message = str(info.value)
    assert "temperature: the index has None, you asked for 0.5" in message
    assert "chunking.sizes: the index has (16, 48), you asked for (16, 64)" in message and "--" not in message
    worded = info.value.worded(lambda name: f"<{name}>")
    assert "<temperature>: the index has None" in worded and "<chunking.sizes>" in worded
    # The index's own values, and run settings, are accepted.
    Index.open(cli_index, expected_settings={"long_text": "truncate"}, expected_chunking={"sizes": (16, 48)}).close()
    with Index.open(cli_index, device="cpu", max_batch_tokens=512) as index:
        assert index.config.device == "cpu" and index.config.max_batch_tokens == 512
    with pytest.raises(SettingError, match="query_prompt is not a run setting"):
        Index.open(cli_index, query_prompt="q: ")
    with pytest.raises(IndexNotFoundError):
        Index.open(cli_index.parent / "nothing-here")


def test_create_add_search_delete_on_qdrant_local_mode(tmp_path: Path) -> None:
    folder = tmp_path / "qindex"
    with Index.create(folder, chunking=CHUNKING, backend=QdrantSettings()) as index:
        assert index.manifest is None and not folder.exists(), "nothing is written before the first document"
        stored = index.add({"chain": "Oil the bicycle chain every few hundred kilometres. " * 6, "soup": "Simmer."})
        assert stored > 2 and set(index.sources()) == {"chain", "soup"}
        assert index.add({"chain": "Oil the bicycle chain every few hundred kilometres. " * 6}) == 0, "unchanged"
        assert index.search_documents("how often to oil a chain", k=1)[0].source == "chain"
    with Index.open(folder) as index:
        assert index.manifest is not None and index.manifest.store == "qdrant"
        assert index.config.query_temperature == 0.8 and len(index.config.buckets) == 2
        with pytest.raises(ValueError, match="opened for searching"):
            index.add({"x": "y"})
    with Index.open(folder, writable=True) as index:
        assert index.delete("soup") >= 1 and set(index.sources()) == {"chain"}
    with pytest.raises(ValueError, match="already holds an index"):
        Index.create(folder)


def test_index_folder_matches_the_cli(tmp_path: Path, cli_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = cli_index.parent / "docs"
    with Index.create(tmp_path / "api", chunking=CHUNKING) as index:
        summary = index.index_folder([docs])
        assert summary.files_indexed == 3 and not summary.files_failed
    with Index.open(tmp_path / "api") as api, Index.open(cli_index) as cli:
        assert api.manifest is not None and cli.manifest is not None
        assert api.manifest.config == cli.manifest.config and api.manifest.chunking == cli.manifest.chunking
        vector = cli.query_vector(QUESTIONS[1])
        ranked = [(d.source, round(d.score, 5)) for d in api.search_documents(vector, k=3)]
        assert ranked == [(d.source, round(d.score, 5)) for d in cli.search_documents(vector, k=3)]


def load_example(name: str) -> Any:
    """A module of `examples/` (not a package), imported from its file."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the retriever's annotations through it
    spec.loader.exec_module(module)
    return module


def test_langchain_retriever_example_over_an_index(cli_index: Path) -> None:
    from langchain_core.retrievers import BaseRetriever

    example = load_example("langchain_index_retriever")
    with Index.open(cli_index) as index:
        retriever = example.TempScaleIndexRetriever(index=index, k=3)
        assert isinstance(retriever, BaseRetriever)
        docs = retriever.invoke(QUESTIONS[0])
        hits = index.search(QUESTIONS[0], k=3)
        assert [(d.page_content, d.metadata["score"], d.id) for d in docs] == [(h.text, h.score, h.id) for h in hits]
        files = example.TempScaleIndexRetriever(index=index, k=2, documents=True).invoke(QUESTIONS[1])
        assert [d.metadata["source"] for d in files] == [d.source for d in index.search_documents(QUESTIONS[1], k=2)]
        assert files[0].metadata["source"].endswith("contract.rst")


def test_llamaindex_retriever_example_over_an_index(cli_index: Path) -> None:
    from llama_index.core.retrievers import BaseRetriever

    example = load_example("llamaindex_index_retriever")
    with Index.open(cli_index) as index:
        retriever = example.TempScaleIndexRetriever(index, k=3)
        assert isinstance(retriever, BaseRetriever)
        nodes = retriever.retrieve(QUESTIONS[2])
        hits = index.search(QUESTIONS[2], k=3)
        assert [(n.node.get_content(), n.score, n.node.node_id) for n in nodes] == [
            (h.text, h.score, h.id) for h in hits
        ]
        files = example.TempScaleIndexRetriever(index, k=2, documents=True).retrieve(QUESTIONS[2])
        assert files[0].node.metadata["source"].endswith("soup.md")
        assert [n.score for n in files] == [d.score for d in index.search_documents(QUESTIONS[2], k=2)]
