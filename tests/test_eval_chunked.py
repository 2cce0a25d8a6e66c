"""Tests of the evaluator's default pipeline: documents chunked as `index` chunks them and ranked from their chunks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tempscale_rag import TempScaleConfig, TempScaleEncoder
from tempscale_rag.config import ChunkingConfig
from tempscale_rag.evaluation import evaluate_run
from tempscale_rag.evaluation import runner as runner_module
from tempscale_rag.evaluation.report import markdown_report, write_outputs
from tempscale_rag.evaluation.runner import (
    EvalConfiguration,
    EvalTask,
    RetrievalEvaluator,
    beir_task,
    build_configurations,
    passkey_task,
)
from tempscale_rag.ingest.chunking import MultiSizeChunker
from tempscale_rag.ranking.documents import ChunkGroups, DocumentScoring, group_vectors, score_documents
from tempscale_rag.windows import TokenCounter

from .test_eval_runner import write_beir

# Small on purpose: the suite runs on two shared CPU cores. A 64-token window keeps every forward pass short.
BASE = TempScaleConfig(device="cpu")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 5
FACTS = {
    "d1": ("Alice keeps her bicycle in the red barn near the river.", "Where does Alice keep her bicycle?"),
    "d2": (
        "The museum's oldest painting shows a violin on a windowsill.",
        "What does the museum's oldest painting show?",
    ),
    "d3": (
        "Chef Marco bakes sourdough bread with rosemary every Sunday.",
        "What bread does Chef Marco bake on Sunday?",
    ),
    "d4": ("The submarine reached a depth of eleven kilometres in the trench.", "How deep did the submarine dive?"),
}


def configs(**axes: Any) -> list[EvalConfiguration]:
    return build_configurations(BASE, max_seq_lengths=[64], **{"retrievals": ["dense"], **axes})


@pytest.fixture(scope="module")
def needles(tmp_path_factory: pytest.TempPathFactory) -> EvalTask:
    """Four documents whose only distinguishing sentence sits in the middle, past the first 64 tokens."""
    docs = {doc_id: f"{FILLER}{fact} {FILLER}" for doc_id, (fact, _) in FACTS.items()}
    queries = {f"q{doc_id}": question for doc_id, (_, question) in FACTS.items()}
    folder = write_beir(tmp_path_factory.mktemp("needles"), docs, queries, {f"q{d}": d for d in FACTS})
    return beir_task(folder)


@pytest.fixture(scope="module")
def tiny_passkey() -> EvalTask:
    return passkey_task((96, 192), n_docs=12, n_queries=4, seed=3)


def test_chunked_ranking_finds_a_needle_that_truncation_cannot(encoder: TempScaleEncoder, needles: EvalTask) -> None:
    configurations = configs(doc_scores=["max", "vector"], chunkings=["16,32"], temperatures=[1.0])
    assert [c.name for c in configurations] == ["tau=1 max", "tau=1 vector"]
    results = RetrievalEvaluator(encoder).evaluate(needles, configurations).by_name()
    assert results["tau=1 max"].metrics["acc@1"] == pytest.approx(1.0)
    # The first 64 tokens of every document are the same filler: one vector per document cannot tell them apart.
    assert results["tau=1 vector"].metrics["acc@1"] <= 0.25
    assert results["tau=1 vector"].encoding["truncated_documents"] == 4
    assert results["tau=1 max"].encoding["truncated_documents"] == 0


def test_chunked_ranking_matches_a_brute_force_reference(
    encoder: TempScaleEncoder, tiny_passkey: EvalTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Product path by hand: chunk with the index's chunker, embed under the sizes' buckets, score every chunk.
    monkeypatch.setattr(runner_module, "SCORE_BLOCK_ELEMENTS", 1)  # one query per block
    monkeypatch.setattr(runner_module, "RETRIEVAL_DEPTH", 3)  # keep the top 10 of 12 documents: the partial path
    configurations = configs(doc_scores=["hybrid"], chunkings=["16:1,32:0.8"])
    assert [c.name for c in configurations] == ["tau=1", "taus 16:1,32:0.8"]
    results = RetrievalEvaluator(encoder, k_values=(1, 10)).evaluate(tiny_passkey, configurations)
    result = results.results[1]
    assert result.pipeline["chunk_temperatures"] == [1.0, 0.8]
    assert result.pipeline["chunk_tokens"] == [16, 32] and result.pipeline["doc_score"] == "hybrid"

    chunking = ChunkingConfig.parse("16:1,32:0.8")
    n_special = encoder.count_tokens([""])[0]
    engine = encoder.with_config(max_seq_length=64, buckets=chunking.buckets(n_special))
    chunker = MultiSizeChunker(engine, chunking)
    for label, ds in tiny_passkey.parts.items():
        texts: list[str] = []
        sizes: list[int] = []
        owners: list[str] = []
        for doc_id, text in ds.corpus.items():
            for chunk in chunker.split(text):
                texts.append(chunk.text)
                sizes.append(chunk.size)
                owners.append(doc_id)
        groups = ChunkGroups.build(owners, sizes)
        vectors = engine.encode(texts)
        queries = engine.encode(list(ds.queries.values()), query=True)
        scores = score_documents(
            queries @ vectors.T, groups, DocumentScoring("hybrid"), queries @ group_vectors(vectors, groups).T
        )
        run = {
            qid: {str(doc): float(s) for doc, s in zip(groups.documents, row, strict=True)}
            for qid, row in zip(ds.queries, scores, strict=True)
        }
        expected = evaluate_run(run, ds.qrels, (1, 10)).per_query
        got = result.parts[label].per_query
        for qid in ds.queries:
            for key in ("ndcg@1", "ndcg@10", "recall@10", "acc@1"):
                assert got[qid][key] == pytest.approx(expected[qid][key], abs=1e-6), (label, qid, key)
        assert len(next(iter(run.values()))) == 12  # the reference ranks every document; the evaluator its top 10


def test_a_second_configuration_with_the_same_chunks_and_taus_embeds_nothing(
    encoder: TempScaleEncoder, tiny_passkey: EvalTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = TempScaleEncoder.encode

    def counting(self: TempScaleEncoder, texts: Any, **kwargs: Any) -> Any:
        calls.append(len(texts))
        return original(self, texts, **kwargs)

    monkeypatch.setattr(TempScaleEncoder, "encode", counting)
    configurations = configs(doc_scores=["max", "mean"], chunkings=["16,32"], temperatures=[0.8], queries="plain")
    assert [c.name for c in configurations] == [
        "tau=1 max",
        "tau=0.8 docs-only max",
        "tau=1 mean",
        "tau=0.8 docs-only mean",
    ]
    evaluator = RetrievalEvaluator(encoder)
    first = evaluator.evaluate(tiny_passkey, configurations[:2])
    embedded = sum(calls)
    assert embedded == evaluator.texts_encoded > 0
    second = evaluator.evaluate(tiny_passkey, configurations[2:])
    assert sum(calls) == embedded  # nothing new: same chunk texts, same taus, queries at tau 1 as before
    for before, after in zip(first.results, second.results, strict=True):
        assert after.cost["texts_embedded"] == 0 and after.cost["embedding_seconds_measured"] == 0.0
        # What embedding the configuration costs is still reported, from the measured first pass.
        assert after.cost["embedding_seconds"] == pytest.approx(before.cost["embedding_seconds"])
        assert after.cost["tokens_embedded"] == before.cost["tokens_embedded"]
    # Passkey chunks repeat across documents: each distinct (chunk text, tau) is embedded once.
    baseline = first.results[0]
    assert baseline.cost["texts_embedded"] < baseline.pipeline["chunks"]


def test_cost_fields_are_sane(encoder: TempScaleEncoder, tiny_passkey: EvalTask) -> None:
    configurations = configs(doc_scores=["max", "mean", "vector"], chunkings=["16,32"], temperatures=[1.0])
    results = RetrievalEvaluator(encoder).evaluate(tiny_passkey, configurations).by_name()
    chunked, mean, vector = results["tau=1 max"], results["tau=1 mean"], results["tau=1 vector"]
    source = chunked.cost["source_tokens"]
    n_special = encoder.count_tokens([""])[0]
    expected_source = sum(
        n - n_special for ds in tiny_passkey.parts.values() for n in encoder.count_tokens(list(ds.corpus.values()))
    )
    assert source == expected_source == vector.cost["source_tokens"]
    # Two sizes, each covering the whole text with some overlap, plus special tokens per chunk.
    assert 2.0 < chunked.cost["tokens_per_source_token"] < 4.0
    chunks = chunked.pipeline["chunks"]
    assert chunked.cost["vectors_stored"] == chunks
    assert chunked.cost["vectors_per_1k_source_tokens"] == pytest.approx(1000 * chunks / source, abs=1e-3)
    # `mean` also stores one mean vector per (document, size) group: 12 documents x 2 sizes x 2 lengths.
    assert mean.cost["vectors_stored"] == chunks + 48
    assert chunked.cost["embedding_seconds"] > 0 and chunked.cost["embedding_seconds_measured"] > 0
    # One vector per document, truncated to the 64-token window.
    assert vector.cost["vectors_stored"] == 24
    assert vector.cost["tokens_embedded"] == 24 * 64
    assert vector.cost["tokens_per_source_token"] < 1.0
    report = markdown_report(RetrievalEvaluator(encoder).evaluate(tiny_passkey, configurations[:1]))
    assert "tokens/src" in report and "vec/1k" in report and "embed s" in report


def test_axes_names_and_baselines() -> None:
    configurations = configs(doc_scores=["max", "vector"], chunkings=["16", "16:1,32:0.8", "16,32"], temperatures=[0.8])
    assert [(c.name, c.baseline) for c in configurations] == [
        ("tau=1 max chunks 16", None),
        ("tau=0.8 max chunks 16", "tau=1 max chunks 16"),
        ("tau=1 max chunks 16,32", None),
        ("taus 16:1,32:0.8 max chunks 16,32", "tau=1 max chunks 16,32"),
        ("tau=0.8 max chunks 16,32", "tau=1 max chunks 16,32"),
        ("tau=1 vector", None),
        ("tau=0.8 vector", "tau=1 vector"),
    ]
    by_name = {c.name: c for c in configurations}
    assert by_name["taus 16:1,32:0.8 max chunks 16,32"].size_taus
    assert by_name["tau=1 max chunks 16"].chunking == ChunkingConfig(sizes=(16,), doc_score="max", retrieval="dense")
    assert by_name["tau=1 vector"].chunking is None
    # With no temperature setting, a chunked pipeline is compared with its sizes' own (default) taus.
    assert [c.name for c in build_configurations(BASE, retrievals=["dense"])] == [
        "tau=1",
        "taus 24:1,48:1,192:0.9,499:0.9",
    ]
    # By default one run also has BM25 alone and every dense row fused with BM25, on the same chunks.
    default = build_configurations(BASE)
    assert [c.name for c in default] == [
        "BM25",
        "tau=1",
        "taus 24:1,48:1,192:0.9,499:0.9",
        "hybrid tau=1",
        "hybrid taus 24:1,48:1,192:0.9,499:0.9",
    ]
    assert [c.chunking.retrieval for c in default if c.chunking] == ["lexical", "dense", "dense", "hybrid", "hybrid"]
    assert [c.baseline for c in default] == [None, None, "tau=1", None, "hybrid tau=1"]
    with pytest.raises(ValueError, match="invalid chunk sizes"):
        configs(chunkings=["64,32"])


def test_lexical_weights_are_an_axis_of_the_hybrid_rows() -> None:
    weighted = build_configurations(BASE, chunkings=["499:0.9"], lexical_weights=[1, 2.5])
    assert [c.name for c in weighted] == [
        "BM25",
        "tau=1",
        "taus 499:0.9",
        "hybrid w=1 tau=1",
        "hybrid w=1 taus 499:0.9",
        "hybrid w=2.5 tau=1",
        "hybrid w=2.5 taus 499:0.9",
    ]
    assert [c.chunking.lexical_weight for c in weighted if c.chunking] == [1, 1, 1, 1, 1, 2.5, 2.5]
    assert weighted[-1].baseline == "hybrid w=2.5 tau=1"
    # One weight names no axis; a chunking's own weight (a preset's) is kept without the argument.
    single = build_configurations(BASE, chunkings=["499"], lexical_weights=[3])
    assert [c.chunking.lexical_weight for c in single if c.name.startswith("hybrid") and c.chunking] == [3, 3]
    own = build_configurations(BASE, chunkings=[ChunkingConfig(sizes=(499,), lexical_weight=2.0)])
    assert {c.chunking.lexical_weight for c in own if c.chunking} == {2.0}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lexical weight"):
            build_configurations(BASE, lexical_weights=[bad])


def test_a_chunk_size_larger_than_the_window_is_a_clear_error(encoder: TempScaleEncoder, needles: EvalTask) -> None:
    configurations = configs(chunkings=["128"], temperatures=[1.0])
    with pytest.raises(ValueError, match="chunk size"):
        RetrievalEvaluator(encoder).evaluate(needles, configurations)


def test_json_carries_the_pipeline_fields(encoder: TempScaleEncoder, needles: EvalTask, tmp_path: Path) -> None:
    configurations = configs(doc_scores=["topm", "vector"], chunkings=["16:1,32:0.9"])
    results = RetrievalEvaluator(encoder).evaluate(needles, configurations)
    paths = write_outputs(results, tmp_path / "out", per_query=False)
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| taus 16:1,32:0.9 topm | topm 16,32 | 64 |" in paths["markdown"].read_text()
    document = results.to_json_dict(per_query=False)
    json.dumps(document)
    entries = {c["name"]: c for c in document["configurations"]}
    assert list(entries) == ["tau=1 topm", "taus 16:1,32:0.9 topm", "tau=1 vector", "default buckets vector"]
    chunked = entries["taus 16:1,32:0.9 topm"]
    assert chunked["doc_score"] == "topm" and chunked["chunk_tokens"] == [16, 32]
    assert chunked["chunk_temperatures"] == [1.0, 0.9]
    assert chunked["chunk_overlap_tokens"] == [2, 4]
    assert chunked["chunking"]["temperatures"] == [1.0, 0.9] and chunked["long_text"] is None
    assert entries["tau=1 topm"]["chunk_temperatures"] == [1.0, 1.0]
    assert entries["tau=1 vector"]["doc_score"] == "vector" and entries["tau=1 vector"]["chunk_tokens"] is None
    for entry in entries.values():
        assert set(entry["cost"]) >= {
            "tokens_per_source_token",
            "vectors_per_1k_source_tokens",
            "embedding_seconds",
            "embedding_seconds_measured",
            "vectors_stored",
            "tokens_embedded",
            "source_tokens",
        }
    assert np.isfinite(chunked["metrics"]["ndcg@10"])


def test_chunk_pool_workers_give_the_chunks_of_the_in_process_chunker(
    encoder: TempScaleEncoder, tiny_passkey: EvalTask
) -> None:
    from tempscale_rag.evaluation.chunkpool import ChunkPool

    texts = [*tiny_passkey.parts["192"].corpus.values(), FILLER, "One sentence.", "x" * 500, "mañana 🤖 \x07 end."]
    engine = encoder.with_config(max_seq_length=64)
    n_special = engine.count_tokens([""])[0]
    local = MultiSizeChunker(engine, ChunkingConfig(sizes=(16,), overlap_tokens=3))
    expected = [[chunk.text for chunk in local.split(text)] for text in texts]
    counter = TokenCounter.from_encoder(engine)
    assert counter.n_special == n_special and counter.tokenizer_json is not None
    pool = ChunkPool(counter, 16, 3, workers=2)
    assert pool.split(texts) == expected


@pytest.mark.slow  # starts eight worker processes, each importing the package (about 10 s of CPU each)
def test_the_evaluator_with_chunk_workers_gives_the_same_numbers(
    encoder: TempScaleEncoder, tiny_passkey: EvalTask
) -> None:
    configurations = configs(chunkings=["16:1,32:0.8"])
    pooled = RetrievalEvaluator(encoder, chunk_workers=2)
    pooled._pool_characters = 0  # use the workers however small the task
    a = pooled.evaluate(tiny_passkey, configurations)
    b = RetrievalEvaluator(encoder, chunk_workers=0).evaluate(tiny_passkey, configurations)
    for x, y in zip(a.results, b.results, strict=True):
        assert x.pipeline["chunks"] == y.pipeline["chunks"]
        for label in tiny_passkey.parts:
            assert x.parts[label].per_query == y.parts[label].per_query
    with pytest.raises(ValueError, match="chunk_workers"):
        RetrievalEvaluator(encoder, chunk_workers=-1)
