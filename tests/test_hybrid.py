"""Hybrid retrieval: the fusion rule, the evaluator's BM25 / dense / hybrid rows, and `--retrieval` on eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tempscale_rag.cli import main
from tempscale_rag.config import ChunkingConfig, LexicalSettings
from tempscale_rag.evaluation.runner import LexicalLists, fuse_runs
from tempscale_rag.ranking.fusion import normalise
from tempscale_rag.ranking.hybrid import Fusion, check_retrieval, fuse_ranked
from tempscale_rag.ranking.lexical import LexicalAnalyzer, PivotBM25, SparseEncoder


def test_fuse_ranked_is_dbsf_over_each_lists_head_with_the_list_floor_for_the_absent() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
    lexical = [("c", 12.0), ("d", 3.0)]
    fused = dict(fuse_ranked(dense, lexical, Fusion()))
    d = dict(zip("abc", normalise(np.array([0.9, 0.8, 0.5]), "dbsf"), strict=True))
    lx = dict(zip("cd", normalise(np.array([12.0, 3.0]), "dbsf"), strict=True))
    expected = {
        "a": d["a"] + min(lx.values()),
        "b": d["b"] + min(lx.values()),
        "c": d["c"] + lx["c"],
        "d": min(d.values()) + lx["d"],
    }
    assert fused == pytest.approx(expected)
    # Depth cuts each list before normalising; a weight of 0 keeps the dense order.
    assert [k for k, _ in fuse_ranked(dense, lexical, Fusion(depth=1))] == ["a", "c"]
    assert [k for k, _ in fuse_ranked(dense, lexical, Fusion(lexical_weight=0.0))][:3] == ["a", "b", "c"]


def test_fuse_ranked_channels_alone_and_a_query_without_terms() -> None:
    dense = [("a", 0.9), ("b", 0.1)]
    lexical = [("b", 5.0)]
    assert fuse_ranked(dense, lexical, Fusion(retrieval="dense")) == [("a", 0.9), ("b", 0.1)]
    assert fuse_ranked(dense, lexical, Fusion(retrieval="lexical")) == [("b", 5.0)]
    assert fuse_ranked(dense, [], Fusion()) == [("a", 0.9), ("b", 0.1)]  # no lexical terms: the dense ranking
    with pytest.raises(ValueError, match="choose one of hybrid, dense, lexical"):
        check_retrieval("sparse")
    for bad in ({"lexical_weight": float("nan")}, {"depth": 0}, {"method": "sum"}):
        with pytest.raises(ValueError):
            Fusion(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ChunkingConfig(lexical_weight=float("inf"))


def test_fuse_runs_applies_the_chunking_settings() -> None:
    dense = {"q": {"a": 0.9, "b": 0.8, "x": 0.1}}
    lexical = {"q": LexicalLists([("b", 9.0), ("c", 1.0), ("e", 0.5)], [("c", 4.0), ("b", 3.0)])}
    fused = fuse_runs(dense, lexical, ChunkingConfig(retrieval="hybrid"))
    assert max(fused["q"], key=fused["q"].__getitem__) == "b"
    assert fuse_runs(dense, lexical, ChunkingConfig(retrieval="dense"))["q"] == dense["q"]
    # The two lexical lists alone: their DBSF sum (c is first of one, second of the other, and above b's floor).
    only = fuse_runs(dense, lexical, ChunkingConfig(retrieval="lexical"))["q"]
    chunk = dict(zip("bce", normalise(np.array([9.0, 1.0, 0.5]), "dbsf"), strict=True))
    whole = dict(zip("cb", normalise(np.array([4.0, 3.0]), "dbsf"), strict=True))
    assert only == pytest.approx({d: chunk[d] + whole.get(d, min(whole.values())) for d in "bce"})


def test_fuse_ranked_adds_the_whole_document_list() -> None:
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
    chunks = [("c", 12.0), ("d", 3.0)]
    whole = [("d", 7.0), ("c", 6.0), ("b", 1.0)]
    fused = dict(fuse_ranked(dense, chunks, Fusion(lexical_weight=2.0), whole))
    norm = {
        name: dict(zip([k for k, _ in xs], normalise(np.array([v for _, v in xs]), "dbsf"), strict=True))
        for name, xs in (("d", dense), ("c", chunks), ("w", whole))
    }

    def part(name: str, key: str) -> float:
        return norm[name].get(key, min(norm[name].values()))

    expected = {k: part("d", k) + 2 * part("c", k) + 2 * part("w", k) for k in "abcd"}
    assert fused == pytest.approx(expected)
    # Dense alone ignores both lexical lists; a query whose terms no document holds leaves the dense ranking.
    assert fuse_ranked(dense, chunks, Fusion(retrieval="dense"), whole) == dense
    assert fuse_ranked(dense, [], Fusion(), []) == dense


def _beir(folder: Path) -> Path:
    """A tiny BEIR set where each query names its document's rare words."""
    corpus = {
        "d1": "The quarterly budget review covered marketing spend and the travel allowance. " * 30,
        "d2": "Volcanic basalt cools into hexagonal columns along the northern coastline. " * 30,
        "d3": "The orchestra rehearsed the cello concerto before the evening premiere. " * 30,
        "d4": "Gardeners prune apple trees in late winter to encourage fruiting spurs. " * 30,
    }
    queries = {"q1": "basalt columns on the coast", "q2": "cello concerto rehearsal", "q3": "pruning apple trees"}
    qrels = {"q1": "d2", "q2": "d3", "q3": "d4"}
    folder.mkdir()
    with open(folder / "corpus.jsonl", "w") as f:
        for doc_id, text in corpus.items():
            f.write(json.dumps({"_id": doc_id, "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels.items())
    )
    return folder


def test_eval_reports_bm25_dense_and_hybrid_rows_on_the_same_chunks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _beir(tmp_path / "tiny")
    argv = ["-q", "eval", str(data), "--device", "cpu", "--chunk-tokens", "16:1,48:0.9", "--json", "--no-per-query"]
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {c["name"]: c for c in document["configurations"]}
    assert list(rows) == ["BM25", "tau=1", "taus 16:1,48:0.9", "hybrid tau=1", "hybrid taus 16:1,48:0.9"]
    assert [rows[n]["retrieval"] for n in rows] == ["lexical", "dense", "dense", "hybrid", "hybrid"]
    assert rows["BM25"]["cost"]["tokens_embedded"] == 0  # BM25 alone embeds nothing
    # The BM25 row ranks by the stores' formula over the 48-token chunks (each document by its best chunk).
    assert rows["BM25"]["metrics"]["ndcg@10"] == pytest.approx(1.0)
    assert rows["hybrid tau=1"]["delta_vs_baseline"] is None
    assert rows["hybrid taus 16:1,48:0.9"]["baseline"] == "hybrid tau=1"
    # One axis value keeps only those rows.
    assert main([*argv, "--retrieval", "lexical"]) == 0
    assert [c["name"] for c in json.loads(capsys.readouterr().out)["configurations"]] == ["BM25"]


def test_pivot_bm25_scores_match_the_formula() -> None:
    analyzer = LexicalAnalyzer()
    texts = analyzer.terms_many(["red apples and green apples", "green grass", "blue sky", ""])
    settings = LexicalSettings.for_chunks(16)
    scorer = PivotBM25(texts, settings.pivot, settings.k1, settings.b)
    query = analyzer.terms("green apples")
    n = len(texts)
    idf = {t: np.log1p((n - df + 0.5) / (df + 0.5)) for t, df in (("green", 2), ("appl", 1))}
    norm = settings.k1 * (1 - settings.b + settings.b * len(texts[0]) / settings.pivot)
    first = idf["appl"] * 2 / (2 + norm) + idf["green"] * 1 / (1 + norm)
    assert scorer.scores(query)[0] == pytest.approx(first, rel=1e-5)
    assert scorer.scores(query)[2:].tolist() == [0.0, 0.0]


def test_cli_dense_only_index_gains_the_lexical_channel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "supply.md").write_text("Either party may terminate the supply agreement with ninety days notice. " * 8)
    (docs / "bikes.txt").write_text("Clean the bicycle chain and lubricate it after riding in the rain. " * 8)
    out = str(tmp_path / "index")
    assert main(["-q", "index", str(docs), "--no-lexical", "--out", out]) == 0
    assert main(["info", "--out", out]) == 0
    assert "dense only: no lexical channel" in capsys.readouterr().out
    assert main(["search", "ninety days notice", "--retrieval", "lexical", "--out", out]) == 1
    assert "no lexical channel" in capsys.readouterr().err
    # No re-embedding: the stored chunk texts are analysed.
    assert main(["-q", "index", str(docs), "--add-lexical", "--out", out]) == 0
    assert "lexical channel: BM25 over the 499-token chunks" in capsys.readouterr().err
    assert main(["search", "ninety days notice", "--retrieval", "lexical", "--documents", "--out", out, "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [d["source"] for d in found] == [str((docs / "supply.md").resolve())]
    assert main(["search", "the and of", "--retrieval", "lexical", "--out", out]) == 0
    assert "no indexed chunk contains a term of the query" in capsys.readouterr().out
    assert main(["search", "ninety days notice", "--out", out, "--json", "-k", "1"]) == 0  # hybrid now
    assert json.loads(capsys.readouterr().out)[0]["source"] == str((docs / "supply.md").resolve())


def test_an_index_without_the_whole_document_list_gains_it_with_add_lexical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An index built before whole-document BM25 (its manifest's channel has no document pivot) keeps searching with
    dense + best chunk, says so, and `index --add-lexical` adds the list without re-embedding."""
    from tempscale_rag.index.index import Index
    from tempscale_rag.stores.manifest import read_manifest, write_manifest

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "supply.md").write_text("Either party may terminate the supply agreement with ninety days notice. " * 8)
    (docs / "bikes.txt").write_text("Clean the bicycle chain and lubricate it after riding in the rain. " * 8)
    out = tmp_path / "index"
    assert main(["-q", "index", str(docs), "--out", str(out)]) == 0
    assert main(["info", "--out", str(out)]) == 0
    assert "and over whole documents (pivot 1500 terms)" in capsys.readouterr().out
    # As the previous version wrote it: the manifest's channel without a document pivot.
    manifest = read_manifest(out)
    assert manifest.lexical is not None and manifest.lexical.document_pivot == 1500.0
    old = manifest.model_copy(update={"lexical": manifest.lexical.model_copy(update={"document_pivot": None})})
    write_manifest(out, old)
    with Index.open(out, writable=True) as index:  # a writable open keeps the store in step with the manifest
        store = index._require_store()
        assert store.lexical is not None and store.lexical.document_pivot is None
        hits = index.search_documents("ninety days notice", k=1, retrieval="lexical")
        assert hits[0].source == str((docs / "supply.md").resolve())
    assert main(["info", "--out", str(out)]) == 0
    assert "no whole-document list" in capsys.readouterr().out
    assert main(["-q", "index", str(docs), "--add-lexical", "--out", str(out)]) == 0
    assert "and over whole documents" in capsys.readouterr().err
    upgraded = read_manifest(out).lexical
    assert upgraded is not None and upgraded.document_pivot == 1500.0
    with Index.open(out) as index:
        store = index._require_store()
        assert store.lexical_documents(SparseEncoder().query("bicycle chain rain"), None)[0].tolist() == [
            str((docs / "bikes.txt").resolve())
        ]


def test_the_fast_preset_weighs_bm25_double_and_records_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "supply.md").write_text("Either party may terminate the supply agreement with ninety days notice. " * 8)
    (docs / "bikes.txt").write_text("Clean the bicycle chain and lubricate it after riding in the rain. " * 8)
    out = tmp_path / "index"
    assert main(["-q", "index", str(docs), "--preset", "fast", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunking"]["sizes"] == [499] and manifest["chunking"]["lexical_weight"] == 2.0
    assert main(["info", "--out", str(out)]) == 0
    assert "BM25 weight 2," in capsys.readouterr().out
    assert main(["search", "ninety days notice", "--documents", "--out", str(out), "--json", "-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["source"] == str((docs / "supply.md").resolve())
    # The default keeps equal weights.
    assert ChunkingConfig().lexical_weight == 1.0
