"""`langchain_tempscale.TempScaleEmbeddings` with the real bundled model and real LangChain vector stores."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_qdrant import QdrantVectorStore
from langchain_tempscale import TempScaleEmbeddings
from langchain_text_splitters import RecursiveCharacterTextSplitter
from pydantic import ValidationError
from qdrant_client import QdrantClient
from sentence_transformers import SentenceTransformer

from tempscale_rag import EncodeReport, TempScaleEncoder
from tests.conftest import MIXED_TEXTS, loop_ticks_while_encoding

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community announces its sunset on import
    from langchain_community.vectorstores import FAISS

DOCS = Path(__file__).resolve().parents[3] / "examples" / "docs"
FEW = MIXED_TEXTS[:4]  # 4, 16, 122 and 173 tokens: enough to cross bucket edges, cheap to encode

QUERIES = [
    ("Who will own the migration of the billing service, and by when?", "platform-sync-meeting.md"),
    ("How much notice is needed to terminate the supply agreement?", "supply-agreement-termination.md"),
    ("How does lower seawater pH affect coral calcification?", "coral-acidification-abstract.md"),
    ("How long do I simmer the red lentils until they break down?", "red-lentil-soup.md"),
    ("How often should I oil my bike chain?", "bicycle-chain-care.txt"),
]


@pytest.fixture(scope="module")
def embeddings(encoder: TempScaleEncoder) -> TempScaleEmbeddings:
    """The LangChain adapter over the session's engine (the model is loaded once)."""
    return TempScaleEmbeddings.from_encoder(encoder)


@pytest.fixture(scope="module")
def chunks() -> list[Document]:
    splitter = RecursiveCharacterTextSplitter(chunk_size=600, chunk_overlap=60)
    files = sorted(p for p in DOCS.iterdir() if p.suffix in {".md", ".txt"})
    return splitter.split_documents(
        [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": p.name}) for p in files]
    )


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything loads a model: calls must reuse the engine built with the object."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded during an embedding call")

    monkeypatch.setattr(SentenceTransformer, "__init__", refuse)


# -- the adapter is the engine ----------------------------------------------------------------------------------------


def test_returns_exactly_the_engines_vectors(encoder: TempScaleEncoder, embeddings: TempScaleEmbeddings) -> None:
    docs = embeddings.embed_documents(MIXED_TEXTS)
    assert np.array_equal(np.asarray(docs, dtype=np.float32), encoder.encode(MIXED_TEXTS))
    query = embeddings.embed_query(MIXED_TEXTS[1])
    assert np.array_equal(np.asarray(query, dtype=np.float32), encoder.encode([MIXED_TEXTS[1]], query=True)[0])
    assert isinstance(docs, list) and all(type(x) is float for row in docs for x in row)
    assert all(type(x) is float for x in query)
    assert embeddings.dimension == len(query) == 384


def test_settings_map_onto_the_engine_and_share_its_model(encoder: TempScaleEncoder) -> None:
    embeddings = TempScaleEmbeddings.from_encoder(
        encoder, query_instruction="query: ", text_instruction="passage: ", query_temperature=0.9, temperature=0.85
    )
    reference = encoder.with_config(
        query_prompt="query: ", document_prompt="passage: ", query_temperature=0.9, temperature=0.85
    )
    assert embeddings.encoder.model is encoder.model
    assert embeddings.config == reference.config
    np.testing.assert_allclose(embeddings.embed_documents(FEW), reference.encode(FEW), atol=1e-6)
    np.testing.assert_allclose(embeddings.embed_query("budget"), reference.encode(["budget"], query=True)[0], atol=1e-6)


def test_whole_list_goes_to_the_engine_in_one_call(
    embeddings: TempScaleEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_encode = embeddings.encoder.encode_lists

    def spy(texts: list[str], **kwargs: Any) -> tuple[list[list[float]], EncodeReport]:
        calls.append(len(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(embeddings.encoder, "encode_lists", spy)
    embeddings.embed_documents([f"note {i} about the remote control" for i in range(60)])
    assert calls == [60]


def test_empty_input_gives_no_vectors(embeddings: TempScaleEmbeddings) -> None:
    assert embeddings.embed_documents([]) == []


def test_last_report_shows_truncation(encoder: TempScaleEncoder, embeddings: TempScaleEmbeddings) -> None:
    meeting = (DOCS / "platform-sync-meeting.md").read_text(encoding="utf-8")
    n_tokens = encoder.count_tokens([meeting])[0]
    embeddings.embed_documents([meeting])
    assert (embeddings.last_report.truncated_inputs, embeddings.last_report.dropped_tokens) == (1, n_tokens - 512)


def test_model_dump_round_trip_rebuilds_an_equivalent_object(encoder: TempScaleEncoder) -> None:
    embeddings = TempScaleEmbeddings.from_encoder(
        encoder, buckets="0-32:1.0,32-:0.8", long_text="chunk_mean", max_seq_length=64, query_instruction="query: "
    )
    fields = json.loads(embeddings.model_dump_json())
    rebuilt = TempScaleEmbeddings(**fields)  # loads the model anew from the fields alone
    assert rebuilt.encoder.model is not encoder.model
    assert rebuilt.config == embeddings.config
    np.testing.assert_allclose(rebuilt.embed_documents(FEW), embeddings.embed_documents(FEW), atol=1e-6)
    np.testing.assert_allclose(rebuilt.embed_query("fruit"), embeddings.embed_query("fruit"), atol=1e-6)
    assert TempScaleEmbeddings(**fields, encoder=encoder).encoder.model is encoder.model


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0.0}, "finite number > 0"),
        ({"temperature": float("inf")}, "finite number > 0"),
        ({"query_temperature": -1.0}, "finite number > 0"),
        ({"buckets": "0-128:1.0,100-:0.9"}, "overlap"),
        ({"buckets": [{"min_tokens": 0, "max_tokens": 128, "tau": 1.0}]}, "open-ended"),
        ({"calibration_file": "/no/such/calibration.json"}, "does not exist"),
        ({"model_name": "/no/such/model"}, "cannot load"),
        ({"model_kwargs": {}}, "Extra inputs are not permitted"),
        ({"long_text": "summarise"}, "long_text"),
    ],
)
def test_invalid_configuration_fails_at_construction(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TempScaleEmbeddings(device="cpu", **settings)


def test_engine_fields_cannot_be_changed_after_construction(embeddings: TempScaleEmbeddings) -> None:
    with pytest.raises(ValidationError, match="frozen"):
        embeddings.buckets = "0-:0.5"  # type: ignore[misc]


# -- async ------------------------------------------------------------------------------------------------------------


async def test_async_matches_sync(embeddings: TempScaleEmbeddings) -> None:
    assert await embeddings.aembed_documents(FEW) == embeddings.embed_documents(FEW)
    assert await embeddings.aembed_query("remote") == embeddings.embed_query("remote")


async def test_async_does_not_block_the_event_loop(
    embeddings: TempScaleEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def both() -> Any:
        return asyncio.gather(embeddings.aembed_documents(FEW[:2]), embeddings.aembed_query("budget"))

    ticks = await loop_ticks_while_encoding(embeddings.encoder, monkeypatch, both)
    assert ticks >= 10, f"the event loop ticked only {ticks} times while the engine ran"


# -- real vector stores -----------------------------------------------------------------------------------------------


def test_qdrant_dimension_probe_is_cheap_and_reuses_the_engine(
    embeddings: TempScaleEmbeddings,
    chunks: list[Document],
    tmp_path: Path,
    no_model_loading: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []
    real_encode = embeddings.encoder.encode_lists

    def spy(texts: list[str], **kwargs: Any) -> tuple[list[list[float]], EncodeReport]:
        calls.append(list(texts))
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(embeddings.encoder, "encode_lists", spy)
    first_chunks: dict[str, Document] = {}  # one chunk per file keeps this test cheap
    for chunk in chunks:
        first_chunks.setdefault(chunk.metadata["source"], chunk)
    store = QdrantVectorStore.from_documents(
        list(first_chunks.values()), embeddings, path=str(tmp_path / "qdrant"), collection_name="docs"
    )
    try:
        assert calls[0] == ["dummy_text"]  # the dimension probe: one short text through the loaded engine
        assert [len(c) for c in calls[1:]] == [len(first_chunks)]  # then every chunk in one engine call
        hits = store.similarity_search(QUERIES[1][0], k=1)
        assert hits[0].metadata["source"] == QUERIES[1][1]
    finally:
        store.client.close()
    # Reopening an existing collection probes again, to validate the dimension.
    client = QdrantClient(path=str(tmp_path / "qdrant"))
    try:
        reopened = QdrantVectorStore(client=client, collection_name="docs", embedding=embeddings)
        assert reopened.similarity_search(QUERIES[4][0], k=1)[0].metadata["source"] == QUERIES[4][1]
        assert calls[-2] == ["dummy_text"]
    finally:
        client.close()


def test_qdrant_and_faiss_retrieve_the_same_known_answers(
    embeddings: TempScaleEmbeddings, chunks: list[Document]
) -> None:
    qdrant = QdrantVectorStore.from_documents(chunks, embeddings, location=":memory:", collection_name="docs")
    texts = [c.page_content for c in chunks]
    # Precomputed vectors (no second embedding pass); LangChain's pickle-based save/load is deliberately not used.
    faiss_store = FAISS.from_embeddings(
        list(zip(texts, embeddings.embed_documents(texts), strict=True)),
        embeddings,
        metadatas=[c.metadata for c in chunks],
    )
    for question, source in QUERIES:
        from_qdrant = qdrant.similarity_search_with_score(question, k=3)
        from_faiss = faiss_store.similarity_search_with_score(question, k=3)
        assert from_qdrant[0][0].metadata["source"] == source, question
        assert [d.page_content for d, _ in from_qdrant] == [d.page_content for d, _ in from_faiss], question
        # FAISS returns squared L2 distances; on unit vectors that is 2 - 2 * cosine.
        np.testing.assert_allclose([float(s) for _, s in from_faiss], [2 - 2 * s for _, s in from_qdrant], atol=1e-4)
    qdrant.client.close()
